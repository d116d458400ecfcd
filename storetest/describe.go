package storetest

import (
	"fmt"

	"github.com/oncehq/once"
)

// describe summarizes a record for failure messages.
func describe(r once.Record) string {
	return fmt.Sprintf("{%v token %d attempts %d fp %q lease %v result %s}",
		r.State, r.Token, r.Attempts, r.Fingerprint, r.Lease, describeResult(r.Result))
}

// describeResult summarizes a result without printing large payloads.
func describeResult(r once.Result) string {
	if len(r.Data) > 64 {
		return fmt.Sprintf("{%d bytes, %d meta}", len(r.Data), len(r.Meta))
	}
	return fmt.Sprintf("{%q %v}", r.Data, r.Meta)
}
