package diagnose

import (
	"bufio"
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"sort"
)

// maxLineLen bounds one log line; longer lines are skipped (and counted).
const maxLineLen = 1 << 20

// source reads the events of one input in file order.
type source struct {
	name    string
	idx     int32
	r       *bufio.Reader
	parser  *lineParser
	line    int64
	lastT   int64
	head    *event
	read    *int64
	skipped *int64
	long    []byte
}

// next reads lines until it has an event or the input ends.
func (s *source) next() (*event, error) {
	for {
		b, err := s.readLine()
		if len(b) > 0 || err == nil {
			s.line++
			*s.read++
			if ev := s.parse(b); ev != nil {
				return ev, nil
			}
			*s.skipped++
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
}

func (s *source) parse(b []byte) *event {
	if b == nil {
		return nil // over-long line
	}
	ev, ok := s.parser.parse(b)
	if !ok {
		return nil
	}
	ev.file, ev.line = s.idx, s.line
	if ev.hasTime {
		s.lastT = ev.t
	} else {
		ev.t = s.lastT // untimed lines keep their place in the file
	}
	return ev
}

// readLine returns the next line without its newline. An over-long line is
// returned as nil with a nil error. At the end it returns io.EOF, with the
// last unterminated line if any.
func (s *source) readLine() ([]byte, error) {
	b, err := s.r.ReadSlice('\n')
	if err == nil {
		return trimEOL(b), nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return trimEOL(b), err
	}
	s.long = append(s.long[:0], b...)
	for {
		b, err = s.r.ReadSlice('\n')
		if len(s.long) <= maxLineLen {
			s.long = append(s.long, b...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(s.long) > maxLineLen {
			if err == io.EOF {
				return []byte{}, io.EOF
			}
			return nil, err
		}
		return trimEOL(s.long), err
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// evHeap orders events by time, then file, then line.
type evHeap []*event

func (h evHeap) Len() int { return len(h) }
func (h evHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.t != b.t {
		return a.t < b.t
	}
	if a.file != b.file {
		return a.file < b.file
	}
	return a.line < b.line
}
func (h evHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *evHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *evHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// srcHeap orders sources by their head event.
type srcHeap []*source

func (h srcHeap) Len() int           { return len(h) }
func (h srcHeap) Less(i, j int) bool { return evHeap{h[i].head, h[j].head}.Less(0, 1) }
func (h srcHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *srcHeap) Push(x any)        { *h = append(*h, x.(*source)) }
func (h *srcHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// merger merges sources by time (k-way, one head per source) and then
// through a reorder buffer of one window, so lines out of order by less than
// the window within a file are still seen in time order. Memory: one line
// per source plus the lines of one window.
type merger struct {
	srcs   srcHeap
	buf    sortedQueue
	window int64
	maxT   int64
}

// sortedQueue is the reorder buffer: events sorted by evHeap's order. Logs
// are mostly in order, so an event is usually appended at the end in O(1);
// a late one is inserted by binary search.
type sortedQueue struct {
	evs  []*event
	head int
}

func (q *sortedQueue) len() int { return len(q.evs) - q.head }

func (q *sortedQueue) first() *event { return q.evs[q.head] }

func (q *sortedQueue) push(e *event) {
	n := len(q.evs)
	if n == q.head || !less(e, q.evs[n-1]) {
		q.evs = append(q.evs, e)
		return
	}
	i := q.head + sort.Search(n-q.head, func(i int) bool { return less(e, q.evs[q.head+i]) })
	q.evs = append(q.evs, nil)
	copy(q.evs[i+1:], q.evs[i:n])
	q.evs[i] = e
}

func (q *sortedQueue) pop() *event {
	e := q.evs[q.head]
	q.evs[q.head] = nil
	q.head++
	if q.head > 1024 && q.head > len(q.evs)/2 {
		q.evs = append(q.evs[:0], q.evs[q.head:]...)
		q.head = 0
	}
	return e
}

func less(a, b *event) bool { return evHeap{a, b}.Less(0, 1) }

func newMerger(srcs []*source, window int64) (*merger, error) {
	m := &merger{window: window}
	for _, s := range srcs {
		ev, err := s.next()
		if err != nil {
			return nil, err
		}
		if ev != nil {
			s.head = ev
			m.srcs = append(m.srcs, s)
		}
	}
	heap.Init(&m.srcs)
	return m, nil
}

// next returns the next event in time order, or nil at the end.
func (m *merger) next() (*event, error) {
	for m.srcs.Len() > 0 {
		if m.buf.len() > 0 && m.buf.first().t < m.maxT-m.window {
			return m.buf.pop(), nil
		}
		s := m.srcs[0]
		ev := s.head
		nx, err := s.next()
		if err != nil {
			return nil, err
		}
		if nx == nil {
			heap.Pop(&m.srcs)
		} else {
			s.head = nx
			heap.Fix(&m.srcs, 0)
		}
		m.buf.push(ev)
		m.maxT = max(m.maxT, ev.t)
	}
	if m.buf.len() > 0 {
		return m.buf.pop(), nil
	}
	return nil, nil
}
