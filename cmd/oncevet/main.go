// Command oncevet runs once's analyzers (clockkey, checkthenact) standalone
// or as a vet tool:
//
//	go vet -vettool=$(which oncevet) ./...
//	oncevet ./...
package main

import (
	"golang.org/x/tools/go/analysis/multichecker"

	"github.com/oncehq/once/vet"
)

func main() { multichecker.Main(vet.Analyzers()...) }
