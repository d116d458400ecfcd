package stores_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oncehq/once/stores"
)

func TestOpenErrors(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"once.db", "no scheme"},
		{"ftp://x", "unknown scheme"},
		{"file:", "needs a path"},
		{"ftp://user:secret@host", "…@host"},
	} {
		_, err := stores.Open(context.Background(), c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v; want an error containing %q", c.url, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error leaks the password: %v", c.url, err)
		}
	}
}

func TestOpenMemAndFile(t *testing.T) {
	for _, u := range []string{"mem:", "file:" + filepath.Join(t.TempDir(), "once.db")} {
		s, err := stores.Open(context.Background(), u)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close(%q): %v", u, err)
		}
	}
}
