package race

import (
	"fmt"
	"strconv"
	"strings"
)

// Vars are the values a template can name. A zero I means "not a request":
// {{i}} is rejected where it has no meaning (the check and its expectation).
type Vars struct {
	Round int    // {{round}}: 1-based round number
	Key   string // {{key}}: the round's idempotency key
	N     int    // {{n}}: requests per round
	UUID  string // {{uuid}}: a random UUID, fresh per round
	I     int    // {{i}}: 1-based request number within the round
}

// templateNames lists the names a template may use, in the order the error
// message shows them.
var templateNames = []string{"round", "key", "n", "uuid", "i"}

// CheckTemplate returns an error naming the first unknown {{name}} in s, or
// {{i}} when perRequest is false. Text that is not a complete {{name}} (a lone
// "{{", or braces holding anything but letters) is left as it is, so JSON
// bodies and shell code pass through.
func CheckTemplate(s string, perRequest bool) error {
	for rest := s; ; {
		name, after, ok := nextTemplate(rest)
		if !ok {
			return nil
		}
		rest = after
		if name == "i" && !perRequest {
			return fmt.Errorf("{{i}} is the request number and has no meaning here")
		}
		if !known(name) {
			return fmt.Errorf("unknown template {{%s}} (known: {{round}} {{key}} {{n}} {{uuid}} {{i}})", name)
		}
	}
}

// nextTemplate finds the next "{{name}}" whose name is 1 to 16 ASCII letters.
func nextTemplate(s string) (name, rest string, ok bool) {
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			return "", "", false
		}
		body := s[i+2:]
		j := 0
		for j < len(body) && j <= 16 && isLetter(body[j]) {
			j++
		}
		if j > 0 && j <= 16 && strings.HasPrefix(body[j:], "}}") {
			return body[:j], body[j+2:], true
		}
		s = s[i+1:] // "{{{i}}": the template may start at the next brace
	}
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func known(name string) bool {
	for _, n := range templateNames {
		if n == name {
			return true
		}
	}
	return false
}

// Expand replaces every known {{name}} in s with its value in v.
func Expand(s string, v Vars) string {
	if !strings.Contains(s, "{{") {
		return s
	}
	return strings.NewReplacer(
		"{{round}}", strconv.Itoa(v.Round),
		"{{key}}", v.Key,
		"{{n}}", strconv.Itoa(v.N),
		"{{uuid}}", v.UUID,
		"{{i}}", strconv.Itoa(v.I),
	).Replace(s)
}
