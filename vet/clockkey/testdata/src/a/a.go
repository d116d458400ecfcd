package a

import (
	crand "crypto/rand"
	"fmt"
	"math/rand"
	"strconv"
	"time"

	"b"

	"github.com/google/uuid"
)

// Header, Request and ResponseWriter stand in for net/http's, which is slow
// to load in tests.
type Header map[string][]string

func (h Header) Set(k, v string)     {}
func (h Header) Add(k, v string)     {}
func (h Header) Get(k string) string { return "" }

type Request struct{ Header Header }

type ResponseWriter interface{ Header() Header }

type ChargeParams struct {
	Amount         int
	IdempotencyKey string
}

type Stripe struct{}

func (Stripe) Charge(p ChargeParams) error { return nil }

func (p *ChargeParams) SetIdempotencyKey(val string) { p.IdempotencyKey = val }

// stripe-go's setter: the method's name says what its argument is.
func setter(p *ChargeParams) {
	p.SetIdempotencyKey(strconv.FormatInt(time.Now().UnixNano(), 36)) // want `argument of SetIdempotencyKey is derived from time.Now`
}

func (Stripe) Create(amount int, idempotencyKey string) error { return nil }

// Seed 002: the key includes Date.now().
func chargeCustomer(s Stripe, userID, productID string, amount int) error {
	idempotencyKey := fmt.Sprintf("%s-%s-%d", userID, productID, time.Now().UnixMilli()) // want `variable "idempotencyKey" is derived from time.Now in chargeCustomer`
	return s.Charge(ChargeParams{Amount: amount, IdempotencyKey: idempotencyKey})
}

// The correct twin: the request id comes from the caller.
func chargeCustomerOK(s Stripe, userID, productID, requestID string, amount int) error {
	idempotencyKey := userID + ":" + productID + ":" + requestID
	createdAt := time.Now() // not a key
	_ = createdAt
	return s.Charge(ChargeParams{Amount: amount, IdempotencyKey: idempotencyKey})
}

func header(req *Request) {
	req.Header.Set("Idempotency-Key", uuid.NewString()) // want `header "Idempotency-Key" is derived from uuid.NewString`
	req.Header.Set("X-Trace", uuid.NewString())         // not a key header
}

func headerMap(req *Request) {
	id := strconv.Itoa(rand.Intn(1 << 30)) // want `entry "X-Request-Id" is derived from rand.Intn`
	req.Header["X-Request-Id"] = []string{id}
}

func param(s Stripe) error {
	return s.Create(100, uuid.New().String()) // want `parameter "idempotencyKey" is derived from uuid.New`
}

func field(p *ChargeParams) {
	buf := make([]byte, 16)
	crand.Read(buf) // want `field "IdempotencyKey" is derived from rand.Read`
	p.IdempotencyKey = fmt.Sprintf("%x", buf)
}

func viaHelper(s Stripe) error {
	return s.Create(1, b.NewKey("charge")) // want `parameter "idempotencyKey" is derived from b.NewKey \(time.Now\)`
}

func localHelper() string { // want localHelper:`fresh\(uuid.NewString\)`
	return "k-" + uuid.NewString()
}

func viaLocalHelper(req *Request) {
	k := localHelper() // want `header "Idempotency-Key" is derived from a.localHelper`
	req.Header.Add("Idempotency-Key", k)
}

// Correct twin: the key is minted once, outside the retry loop, and every
// attempt reuses it.
func retryLoop(s Stripe) error {
	key := uuid.NewString()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.Create(100, key); err == nil {
			return nil
		}
	}
	return err
}

// Correct twin: the caller's request id, minted only when the caller sent none.
func requestIDMiddleware(w ResponseWriter, r *Request) {
	requestID := r.Header.Get("X-Request-Id")
	if requestID == "" {
		requestID = uuid.NewString()
	}
	w.Header().Set("X-Request-Id", requestID)
}

// Correct twin: minting a key for the caller (once per user action) and
// returning it is the right layer.
func NewIdempotencyKey() string { // want NewIdempotencyKey:`fresh\(uuid.NewString\)`
	idempotencyKey := uuid.NewString()
	return idempotencyKey
}

// Correct twin: a fresh id for a new entity is not a key.
func newOrder() map[string]string {
	orderID := uuid.NewString()
	return map[string]string{"id": orderID}
}
