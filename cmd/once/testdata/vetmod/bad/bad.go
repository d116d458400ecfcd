// Package bad has the two bugs of seeds 000 and 002.
package bad

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"time"
)

// Charge is seed 002's chargeCustomer in Go.
func Charge(ctx context.Context, db *sql.DB, client *http.Client, userID, productID string) error {
	idempotencyKey := fmt.Sprintf("%s-%s-%d", userID, productID, time.Now().UnixMilli())
	var id int64
	if db.QueryRowContext(ctx, "SELECT id FROM charges WHERE user_id = $1 AND product_id = $2", userID, productID).Scan(&id) == nil {
		return nil
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", "https://payments.example/charges", nil)
	req.Header.Set("Idempotency-Key", idempotencyKey)
	if _, err := client.Do(req); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, "INSERT INTO charges (user_id, product_id) VALUES ($1, $2)", userID, productID)
	return err
}
