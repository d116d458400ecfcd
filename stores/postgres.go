package stores

import (
	"context"
	"errors"

	"github.com/oncehq/once"
)

func openPostgres(ctx context.Context, rawURL string) (once.Store, error) {
	return nil, errors.New("postgres store: not built yet")
}
