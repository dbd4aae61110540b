package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ginrealtime/realtime/internal/latency"
)

// clientStats is a clients process's answer to "stats" (and its ready line).
type clientStats struct {
	Type       string      `json:"type"`
	Opened     int64       `json:"opened"`   // connections that got a 200 stream
	Failed     int64       `json:"failed"`   // dial or response failures
	Closed     int64       `json:"closed"`   // streams that ended after opening
	Events     int64       `json:"events"`   // SSE events with data received since the last reset
	Bytes      int64       `json:"bytes"`    // bytes read since the last reset
	FirstNs    int64       `json:"first_ns"` // receive time of the first event since the reset
	LastNs     int64       `json:"last_ns"`  // receive time of the last event since the reset
	FirstErr   string      `json:"first_err,omitempty"`
	CPUSeconds float64     `json:"cpu_seconds"`    // user + system time of the process so far
	Hist       [][2]uint64 `json:"hist,omitempty"` // latency histogram (see hist)
}

// clientConn is one raw SSE connection. Its reader goroutine parses HTTP/1.1
// chunked framing and SSE lines by hand and records, for every event, the
// delay since the send time "t" in its data.
type clientConn struct {
	conn net.Conn // until handed over to a pollLoop
	fd   int      // owned by a pollLoop after the handover; -1 once closed

	// reader state, touched by the reader goroutine only
	chunked bool
	cstate  int   // 0 size line, 1 data, 2 CRLF after data, 3 ended
	csize   int64 // size being parsed / data remaining
	pend    []byte
	hasData bool
	t       int64
	ws      bool     // a WebSocket: frames, not chunks and SSE lines (wsFeed)
	hdr     [14]byte // WebSocket frame header being read
	hlen    int
	op      byte // opcode of the frame being read

	mu      sync.Mutex // guards the counters below (the reader, stats and reset)
	events  int64
	bytes   int64
	firstNs int64
	lastNs  int64
	lat     *latency.Hist
}

type clientSet struct {
	mu       sync.Mutex
	conns    []*clientConn
	opened   atomic.Int64
	failed   atomic.Int64
	closed   atomic.Int64
	errOnce  sync.Once
	firstErr atomic.Value
	bufSize  int
	batch    time.Duration
	ws       bool   // WebSocket clients
	wsWait   string // WebSocket: read until this appears after subscribing
	loops    []*pollLoop
	byFD     [1 << 16]atomic.Pointer[clientConn]
	stopping atomic.Bool
	loopWG   sync.WaitGroup
}

func clientsMain(args []string) error {
	fs := flag.NewFlagSet("clients", flag.ExitOnError)
	n := fs.Int("n", 1000, "connections to open")
	urls := fs.String("url", "", "comma-separated stream URLs; {id} is replaced by the record id")
	ids := fs.String("ids", "same", "record ids: same (every connection follows record 1) or distinct (base+index)")
	base := fs.Int("base", 0, "first record id for -ids distinct")
	conc := fs.Int("conc", 64, "concurrent connection attempts")
	bufSize := fs.Int("buf", 32<<10, "read buffer of each poll loop (bytes)")
	batch := fs.Duration("batch", 0, "pause after a wake-up that found few ready connections (batches reads)")
	ws := fs.Bool("ws", false, "WebSocket clients: upgrade, send the subscribe message, parse frames")
	wsWait := fs.String("ws-wait", "", "WebSocket: after subscribing, wait until the server's frames contain this (e.g. subscribed)")
	_ = fs.Parse(args)
	if *urls == "" || *n <= 0 {
		return errors.New("clients: -url and -n > 0 are required")
	}
	var targets []*url.URL
	for _, u := range strings.Split(*urls, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" {
			return fmt.Errorf("clients: bad url %q", u)
		}
		targets = append(targets, pu)
	}
	cs := &clientSet{bufSize: *bufSize, batch: *batch, ws: *ws, wsWait: *wsWait}
	if err := cs.startLoops(runtime.GOMAXPROCS(0)); err != nil {
		return err
	}
	sem := make(chan struct{}, max(*conc, 1))
	var wg sync.WaitGroup
	for i := range *n {
		id := "1"
		if *ids == "distinct" {
			id = strconv.Itoa(*base + i)
		}
		u := targets[i%len(targets)]
		path := strings.ReplaceAll(u.RequestURI(), "%7Bid%7D", id)
		path = strings.ReplaceAll(path, "{id}", id)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, body, err := cs.open(u.Host, path)
			if err != nil {
				cs.failed.Add(1)
				cs.errOnce.Do(func() { cs.firstErr.Store(err.Error()) })
				return
			}
			cs.opened.Add(1)
			if err := cs.handOver(c, body); err != nil {
				cs.closed.Add(1)
			}
		}()
	}
	wg.Wait() // every attempt has opened (and been handed over) or failed
	out := bufio.NewWriter(os.Stdout)
	emit := func(v any) {
		b, _ := json.Marshal(v)
		out.Write(b)
		out.WriteByte('\n')
		out.Flush()
	}
	st := cs.stats(false)
	st.Type = "ready"
	emit(st)

	var prof *os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch cmd {
		case "profile-start": // arg: path prefix; the file is <prefix>-<pid>.pprof
			var err error
			if prof, err = os.Create(fmt.Sprintf("%s-%d.pprof", arg, os.Getpid())); err == nil {
				err = pprof.StartCPUProfile(prof)
			}
			res := map[string]string{"type": "profile"}
			if err != nil {
				res["error"] = err.Error()
			}
			emit(res)
		case "profile-stop":
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
				prof = nil
			}
			emit(map[string]string{"type": "profile"})
		case "stats":
			st := cs.stats(true)
			st.Type = "stats"
			emit(st)
		case "reset":
			cs.reset()
			emit(map[string]string{"type": "reset"})
		case "quit":
			cs.closeAll()
			return nil
		}
	}
	cs.closeAll() // stdin closed: the parent is gone
	return nil
}

// open dials host, sends the request and reads the response head; it
// returns the bytes read past the head.
func (cs *clientSet) open(host, path string) (*clientConn, []byte, error) {
	conn, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close with RST: no TIME_WAIT left on the client ports
	}
	c := &clientConn{conn: conn, fd: -1, ws: cs.ws}
	cs.mu.Lock()
	cs.conns = append(cs.conns, c)
	cs.mu.Unlock()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAccept: text/event-stream\r\nUser-Agent: rtbench\r\n\r\n"
	okStatus := "HTTP/1.1 200"
	if cs.ws {
		req, okStatus = wsUpgradeRequest(host, path), "HTTP/1.1 101"
	}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	buf := make([]byte, 0, 1024)
	for {
		if len(buf) == cap(buf) {
			conn.Close()
			return nil, nil, errors.New("response head too large")
		}
		m, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head := string(buf[:i])
			if !strings.HasPrefix(head, okStatus) {
				conn.Close()
				line, _, _ := strings.Cut(head, "\r\n")
				return nil, nil, fmt.Errorf("status %q: %.200s", line, buf[i+4:])
			}
			c.chunked = strings.Contains(strings.ToLower(head), "\r\ntransfer-encoding: chunked")
			rest := append([]byte(nil), buf[i+4:]...)
			if cs.ws {
				var err error
				if rest, err = cs.wsOpen(c, rest); err != nil {
					conn.Close()
					return nil, nil, err
				}
			}
			_ = conn.SetDeadline(time.Time{})
			return c, rest, nil
		}
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
}

// pollLoop reads its connections with epoll, edge-triggered, outside Go's
// netpoller: one epoll_wait serves many ready connections and each ready
// connection costs one read (a read shorter than the buffer has drained the
// socket, so no read ends in EAGAIN). This keeps the load generator's CPU per
// delivery low; it shares the machine with the server it measures.
type pollLoop struct {
	cs   *clientSet
	epfd int
	buf  []byte
}

func (cs *clientSet) startLoops(n int) error {
	for range max(n, 1) {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return err
		}
		l := &pollLoop{cs: cs, epfd: epfd, buf: make([]byte, cs.bufSize)}
		cs.loops = append(cs.loops, l)
		cs.loopWG.Add(1)
		go l.run()
	}
	return nil
}

// handOver feeds the bytes read with the response head, then moves the
// connection's socket to a pollLoop (a dup of its descriptor; Go's copy is
// closed, which removes it from Go's netpoller).
func (cs *clientSet) handOver(c *clientConn, first []byte) error {
	if len(first) > 0 {
		now := time.Now().UnixNano()
		c.mu.Lock()
		c.body(first, now)
		c.mu.Unlock()
	}
	rc, err := c.conn.(syscall.Conn).SyscallConn()
	if err != nil {
		c.conn.Close()
		return err
	}
	var fd int
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) }); err != nil || derr != nil {
		c.conn.Close()
		return errors.Join(err, derr)
	}
	c.conn.Close()
	if fd >= len(cs.byFD) {
		syscall.Close(fd)
		return errors.New("descriptor out of range")
	}
	c.mu.Lock()
	c.fd = fd
	c.mu.Unlock()
	cs.byFD[fd].Store(c)
	l := cs.loops[fd%len(cs.loops)]
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | (syscall.EPOLLET & 0xffffffff), Fd: int32(fd)}
	if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		cs.byFD[fd].Store(nil)
		syscall.Close(fd)
		return err
	}
	return nil
}

func (l *pollLoop) run() {
	defer l.cs.loopWG.Done()
	defer syscall.Close(l.epfd)
	events := make([]syscall.EpollEvent, 256)
	for !l.cs.stopping.Load() {
		n, err := syscall.EpollWait(l.epfd, events, 100)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			if c := l.cs.byFD[ev.Fd].Load(); c != nil {
				l.drain(c)
			}
		}
		if n < len(events)/4 && l.cs.batch > 0 {
			// Few sockets were ready: let more become ready before the
			// next wait, so one wake-up serves many (this adds at most
			// batch to a measured latency).
			time.Sleep(l.cs.batch)
		}
	}
}

// drain reads c until a short read (drained), EOF or an error.
func (l *pollLoop) drain(c *clientConn) {
	for {
		n, err := syscall.Read(c.fd, l.buf)
		if err == syscall.EINTR {
			continue
		}
		if n > 0 {
			now := time.Now().UnixNano()
			c.mu.Lock()
			c.body(l.buf[:n], now)
			c.mu.Unlock()
		}
		if err == syscall.EAGAIN {
			return
		}
		if err != nil || n == 0 || c.cstate == 3 {
			l.cs.byFD[c.fd].Store(nil)
			_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
			c.mu.Lock()
			_ = syscall.Close(c.fd)
			c.fd = -1
			c.mu.Unlock()
			l.cs.closed.Add(1)
			return
		}
		if n < len(l.buf) {
			return
		}
	}
}

// body decodes the chunked framing of p and feeds the payload to the SSE
// parser. The caller holds c.mu.
func (c *clientConn) body(p []byte, now int64) {
	c.bytes += int64(len(p))
	if c.ws {
		c.wsFeed(p, now)
		return
	}
	if !c.chunked {
		c.feed(p, now)
		return
	}
	for len(p) > 0 {
		switch c.cstate {
		case 0: // chunk-size [; ext] CRLF
			i := bytes.IndexByte(p, '\n')
			seg := p
			if i >= 0 {
				seg = p[:i]
			}
			for _, b := range seg {
				switch {
				case b >= '0' && b <= '9':
					c.csize = c.csize<<4 | int64(b-'0')
				case b >= 'a' && b <= 'f':
					c.csize = c.csize<<4 | int64(b-'a'+10)
				case b >= 'A' && b <= 'F':
					c.csize = c.csize<<4 | int64(b-'A'+10)
				}
			}
			if i < 0 {
				return
			}
			p = p[i+1:]
			if c.csize == 0 {
				c.cstate = 3
				return
			}
			c.cstate = 1
		case 1:
			k := min(int64(len(p)), c.csize)
			c.feed(p[:k], now)
			p = p[k:]
			c.csize -= k
			if c.csize == 0 {
				c.cstate = 2
			}
		case 2: // the CRLF after the data
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return
			}
			p = p[i+1:]
			c.cstate = 0
		case 3:
			return
		}
	}
}

// feed splits payload into lines, keeping a partial last line for later.
func (c *clientConn) feed(p []byte, now int64) {
	if len(c.pend) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.pend = append(c.pend, p...)
			return
		}
		c.pend = append(c.pend, p[:i]...)
		c.line(c.pend, now)
		c.pend = c.pend[:0]
		p = p[i+1:]
	}
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		c.line(p[:i], now)
		p = p[i+1:]
	}
	if len(p) > 0 {
		c.pend = append(c.pend, p...)
	}
}

var tKey = []byte(`"t":`)

func (c *clientConn) line(l []byte, now int64) {
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	if len(l) == 0 { // end of an event
		if c.hasData {
			c.events++
			if c.firstNs == 0 {
				c.firstNs = now
			}
			c.lastNs = now
			if c.t > 0 {
				if c.lat == nil {
					c.lat = new(latency.Hist)
				}
				c.lat.Add(time.Duration(now - c.t))
			}
		}
		c.hasData, c.t = false, 0
		return
	}
	if !bytes.HasPrefix(l, []byte("data:")) {
		return // event:, id:, retry:, comments
	}
	c.hasData = true
	if i := bytes.Index(l, tKey); i >= 0 && c.t == 0 {
		var t int64
		for _, b := range l[i+len(tKey):] {
			if b < '0' || b > '9' {
				break
			}
			t = t*10 + int64(b-'0')
		}
		c.t = t
	}
}

func (cs *clientSet) list() []*clientConn {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]*clientConn(nil), cs.conns...)
}

func (cs *clientSet) stats(withHist bool) clientStats {
	st := clientStats{Opened: cs.opened.Load(), Failed: cs.failed.Load(), Closed: cs.closed.Load(), CPUSeconds: cpuSeconds()}
	if e, ok := cs.firstErr.Load().(string); ok {
		st.FirstErr = e
	}
	var h latency.Hist
	for _, c := range cs.list() {
		c.mu.Lock()
		st.Events += c.events
		st.Bytes += c.bytes
		if c.firstNs != 0 && (st.FirstNs == 0 || c.firstNs < st.FirstNs) {
			st.FirstNs = c.firstNs
		}
		st.LastNs = max(st.LastNs, c.lastNs)
		if withHist && c.lat != nil {
			h.Merge(c.lat)
		}
		c.mu.Unlock()
	}
	if withHist {
		st.Hist = h.Sparse()
	}
	return st
}

func (cs *clientSet) reset() {
	for _, c := range cs.list() {
		c.mu.Lock()
		c.events, c.bytes, c.firstNs, c.lastNs = 0, 0, 0, 0
		if c.lat != nil {
			*c.lat = latency.Hist{}
		}
		c.mu.Unlock()
	}
}

// closeAll stops the poll loops and closes every connection (with RST:
// SO_LINGER 0 was set at dial).
func (cs *clientSet) closeAll() {
	cs.stopping.Store(true)
	cs.loopWG.Wait()
	for _, c := range cs.list() {
		c.mu.Lock()
		if c.fd > 0 {
			_ = syscall.Close(c.fd)
			c.fd = -1
		}
		c.mu.Unlock()
		_ = c.conn.Close()
	}
}
