// Package good is bad's correct twin.
package good

import (
	"context"
	"database/sql"
	"net/http"
)

// Charge takes the key from the caller and lets a unique constraint decide.
func Charge(ctx context.Context, db *sql.DB, client *http.Client, userID, productID, requestID string) error {
	key := userID + ":" + productID + ":" + requestID
	res, err := db.ExecContext(ctx, `INSERT INTO charges (user_id, product_id, idempotency_key) VALUES ($1, $2, $3)
		ON CONFLICT (idempotency_key) DO NOTHING`, userID, productID, key)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", "https://payments.example/charges", nil)
	req.Header.Set("Idempotency-Key", key)
	_, err = client.Do(req)
	return err
}
