package oncetest_test

import (
	"io"
	"os"
	"testing"

	"github.com/oncehq/once/internal/testenv"
)

// TestExamplePostgres runs Example_postgres, which go test cannot run as an
// example because it needs a server, and checks what it prints.
func TestExamplePostgres(t *testing.T) {
	testenv.PostgresURL(t)
	got := captureStdout(t, Example_postgres)
	want := "check-then-insert: 10 rows\nunique constraint: 1 row, 0 errors\n"
	if got != want {
		t.Errorf("Example_postgres printed:\n%s\nwant:\n%s", got, want)
	}
}

// captureStdout returns what f prints, as go test does for examples.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }() // also when f panics
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	f()
	w.Close()
	return <-out
}
