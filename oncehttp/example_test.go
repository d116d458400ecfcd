package oncehttp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/oncehttp"
)

func ExampleMiddleware() {
	o := once.New(memstore.New(memstore.Config{}), once.Config{})
	defer o.Close()
	orders := 0
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		orders++ // runs once per Idempotency-Key
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d", orders)
	})
	srv := httptest.NewServer(oncehttp.Middleware(o, oncehttp.Config{})(mux))
	defer srv.Close()

	for range 2 {
		req, _ := http.NewRequest("POST", srv.URL+"/orders", strings.NewReader(`{"item":"book"}`))
		req.Header.Set("Idempotency-Key", `"8e03978e-40d5-43e8"`)
		res, _ := http.DefaultClient.Do(req)
		res.Body.Close()
		fmt.Println(res.StatusCode, "replayed:", res.Header.Get("Idempotent-Replayed") == "true")
	}
	fmt.Println("orders created:", orders)
	// Output:
	// 201 replayed: false
	// 201 replayed: true
	// orders created: 1
}
