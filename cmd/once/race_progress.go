package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progressBar draws "[#####     ] 25/50" on a terminal while a round runs.
// It is safe for concurrent use, and redraws at most every 50ms so that a
// round of 10,000 requests does not spend its time printing.
type progressBar struct {
	mu    sync.Mutex
	last  time.Time
	shown bool
}

const barWidth = 30

func (p *progressBar) draw(w io.Writer, round, done, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if done < n && time.Since(p.last) < 50*time.Millisecond {
		return
	}
	p.last = time.Now()
	filled := barWidth * done / n
	fmt.Fprintf(w, "\rround %d [%s%s] %d/%d", round, strings.Repeat("#", filled), strings.Repeat(" ", barWidth-filled), done, n)
	p.shown = true
}

// clear erases the bar, so that the round's line replaces it.
func (p *progressBar) clear(w io.Writer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		io.WriteString(w, "\r\033[K")
		p.shown = false
	}
}
