package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ginrealtime/realtime/internal/latency"
)

// clientStats is a clients process's answer to "stats" and "wait" (and its
// ready line).
type clientStats struct {
	Type       string         `json:"type"`
	Opened     int64          `json:"opened"`   // connections subscribed
	Failed     int64          `json:"failed"`   // dial, handshake or subscribe failures
	Closed     int64          `json:"closed"`   // connections that ended after opening
	Codes      map[string]int `json:"codes"`    // WebSocket close codes received (1005: none given)
	Events     int64          `json:"events"`   // deliveries ("t" fields) since the last reset
	FirstNs    int64          `json:"first_ns"` // receive time of the first delivery since the reset
	LastNs     int64          `json:"last_ns"`  // receive time of the last delivery since the reset
	Pongs      int64          `json:"pongs"`    // application-level pongs sent (centrifuge)
	PongErrs   int64          `json:"pong_errs"`
	PongMaxMs  int64          `json:"pong_max_ms"` // longest ping-to-pong-posted time (centrifuge SSE)
	FirstErr   string         `json:"first_err,omitempty"`
	CPUSeconds float64        `json:"cpu_seconds"`    // user + system time of the process so far
	Hist       [][2]uint64    `json:"hist,omitempty"` // latency histogram (see hist)
}

// clientConn is one raw connection. Once handed over, its poll loop owns it
// and parses HTTP/1.1 chunked framing and SSE lines, or WebSocket frames,
// by hand. Every `"t":` in an SSE data line or a WebSocket text message is
// one delivery, timed from the send time it carries.
type clientConn struct {
	cs   *clientSet
	conn net.Conn // until handed over to a pollLoop
	fd   int      // owned by a pollLoop after the handover; -1 once closed

	// SSE state
	chunked bool
	cstate  int   // chunks: 0 size line, 1 data, 2 CRLF after data; 3 ended
	csize   int64 // chunk size being parsed / data remaining
	pend    []byte
	session string // centrifuge SSE: for the emulation pongs
	node    string

	// WebSocket state
	ws     bool
	hdr    [14]byte // frame header being read
	hlen   int
	op     byte   // opcode of the frame being read
	fin    bool   // FIN of the frame being read
	msgOp  byte   // opcode of the data message being assembled
	msg    []byte // data message being assembled
	ctl    []byte // control frame payload
	remain int64  // payload bytes left in the current frame
	mask   bool
}

// loopStats are one poll loop's counters, guarded by its mutex.
type loopStats struct {
	events  int64
	firstNs int64
	lastNs  int64
	lat     latency.Hist
	codes   map[string]int
}

type clientSet struct {
	spec      implSpec
	mu        sync.Mutex
	conns     []*clientConn
	opened    atomic.Int64
	failed    atomic.Int64
	closed    atomic.Int64
	events    atomic.Int64 // since the last reset, for "wait"
	pongs     atomic.Int64
	pongErrs  atomic.Int64
	errOnce   sync.Once
	firstErr  atomic.Value
	bufSize   int
	loops     []*pollLoop
	byFD      [1 << 16]atomic.Pointer[clientConn]
	stopping  atomic.Bool
	loopWG    sync.WaitGroup
	emulation string // centrifuge SSE: the emulation endpoint's URL
	pongQ     chan pongReq
	pongMax   atomic.Int64 // ns
	pongHTTP  *http.Client
}

func clientsMain(args []string) error {
	fs := flag.NewFlagSet("clients", flag.ExitOnError)
	name := fs.String("impl", "", "implementation (tells the path, the subscribe message and the pings)")
	n := fs.Int("n", 100, "connections to open")
	first := fs.Int("first", 0, "index of this process's first connection among all client processes (per-user tokens)")
	addrs := fs.String("addr", "", "comma-separated server addresses (host:port), used in turn")
	conc := fs.Int("conc", 64, "concurrent connection attempts")
	bufSize := fs.Int("buf", 64<<10, "read buffer of each poll loop (bytes)")
	_ = fs.Parse(args)
	spec, ok := specOf(*name)
	if !ok || *addrs == "" || *n <= 0 {
		return errors.New("clients: -impl, -addr and -n > 0 are required")
	}
	hosts := strings.Split(*addrs, ",")
	cs := &clientSet{spec: spec, bufSize: *bufSize}
	if spec.emulation != "" {
		cs.emulation = "http://" + hosts[0] + spec.emulation
		cs.pongQ = make(chan pongReq, 1<<14)
		// Browsers pong each on their own: many posts in flight at once.
		cs.pongHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: pongers}}
		for range pongers {
			go cs.ponger()
		}
	}
	if err := cs.startLoops(runtime.GOMAXPROCS(0)); err != nil {
		return err
	}
	path := spec.path(0)
	sem := make(chan struct{}, max(*conc, 1))
	var wg sync.WaitGroup
	for i := range *n {
		host := strings.TrimSpace(hosts[i%len(hosts)])
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := path
			if spec.perConn {
				p = spec.path(*first + i)
			}
			c, rest, err := cs.open(host, p)
			if err != nil {
				cs.failed.Add(1)
				cs.errOnce.Do(func() { cs.firstErr.Store(err.Error()) })
				return
			}
			cs.opened.Add(1)
			if err := cs.handOver(c, rest); err != nil {
				cs.closed.Add(1)
			}
		}()
	}
	wg.Wait()
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

	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "stats":
			st := cs.stats(true)
			st.Type = "stats"
			emit(st)
		case "wait": // wait TARGET STALL_MS LIMIT_MS: until TARGET deliveries, or none for STALL, or LIMIT
			var a [3]int64
			for i := range a {
				if i+1 < len(f) {
					a[i], _ = strconv.ParseInt(f[i+1], 10, 64)
				}
			}
			cs.wait(a[0], time.Duration(a[1])*time.Millisecond, time.Duration(a[2])*time.Millisecond)
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

// wait returns once target deliveries arrived since the reset, or none
// arrived for stall, or limit passed.
func (cs *clientSet) wait(target int64, stall, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, lastChange := int64(-1), time.Now()
	for {
		n := cs.events.Load()
		if n >= target || time.Now().After(deadline) {
			return
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > stall {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// open dials host, sends the request, reads the response head and, when the
// implementation says so, sends its subscribe message and reads until the
// server confirms; it returns the bytes read past the head.
func (cs *clientSet) open(host, path string) (*clientConn, []byte, error) {
	conn, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // close with RST: no TIME_WAIT left on the client ports
	}
	ws := cs.spec.ws()
	c := &clientConn{cs: cs, conn: conn, fd: -1, ws: ws}
	cs.mu.Lock()
	cs.conns = append(cs.conns, c)
	cs.mu.Unlock()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAccept: text/event-stream\r\nUser-Agent: bench\r\n\r\n"
	okStatus := "HTTP/1.1 200"
	if ws {
		req, okStatus = wsUpgradeRequest(host, path), "HTTP/1.1 101"
	}
	fail := func(err error) (*clientConn, []byte, error) {
		conn.Close()
		return nil, nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		return fail(err)
	}
	buf := make([]byte, 0, 2048)
	var rest []byte
	for {
		if len(buf) == cap(buf) {
			return fail(errors.New("response head too large"))
		}
		m, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head := string(buf[:i])
			if !strings.HasPrefix(head, okStatus) {
				line, _, _ := strings.Cut(head, "\r\n")
				return fail(fmt.Errorf("status %q: %.200s", line, buf[i+4:]))
			}
			c.chunked = strings.Contains(strings.ToLower(head), "\r\ntransfer-encoding: chunked")
			rest = append([]byte(nil), buf[i+4:]...)
			break
		}
		if err != nil {
			return fail(err)
		}
	}
	if ws && cs.spec.hello != "" {
		if _, err := conn.Write(wsClientFrame(0x1, []byte(cs.spec.hello))); err != nil {
			return fail(err)
		}
	}
	if want := []byte(cs.spec.wait); len(want) > 0 {
		for !bytes.Contains(rest, want) {
			if len(rest) >= 1<<20 {
				return fail(fmt.Errorf("no %s in the first MiB", want))
			}
			tmp := make([]byte, 4096)
			m, err := conn.Read(tmp)
			rest = append(rest, tmp[:m]...)
			if err != nil && !bytes.Contains(rest, want) {
				return fail(fmt.Errorf("waiting for %s: %w", want, err))
			}
		}
	}
	_ = conn.SetDeadline(time.Time{})
	return c, rest, nil
}

// pollLoop reads its connections with epoll, edge-triggered, outside Go's
// netpoller: one epoll_wait serves many ready connections and each ready
// connection costs one read while its data fits the buffer. This keeps the
// load generator's CPU per delivery low: it shares the machine with the
// server it measures.
type pollLoop struct {
	cs   *clientSet
	epfd int
	buf  []byte
	mu   sync.Mutex // guards st and the parser state of the loop's connections
	st   loopStats
}

func (cs *clientSet) startLoops(n int) error {
	for range max(n, 1) {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return err
		}
		l := &pollLoop{cs: cs, epfd: epfd, buf: make([]byte, cs.bufSize), st: loopStats{codes: map[string]int{}}}
		cs.loops = append(cs.loops, l)
		cs.loopWG.Add(1)
		go l.run()
	}
	return nil
}

// handOver moves the connection's socket to a pollLoop (a dup of its
// descriptor; Go's copy is closed, which removes it from Go's netpoller),
// after feeding it the bytes read with the handshake.
func (cs *clientSet) handOver(c *clientConn, first []byte) error {
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
	l := cs.loops[fd%len(cs.loops)]
	l.mu.Lock()
	c.fd = fd
	if len(first) > 0 {
		c.body(l, first, time.Now().UnixNano())
	}
	ended := c.cstate == 3
	l.mu.Unlock()
	if ended {
		syscall.Close(fd)
		return errors.New("ended during the handshake")
	}
	cs.byFD[fd].Store(c)
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
	}
}

// drain reads c until a short read (drained), EOF or an error.
func (l *pollLoop) drain(c *clientConn) {
	for {
		n, err := syscall.Read(c.fd, l.buf)
		if err == syscall.EINTR {
			continue
		}
		l.mu.Lock()
		if n > 0 {
			c.body(l, l.buf[:n], time.Now().UnixNano())
		}
		ended := c.cstate == 3
		if err != nil && err != syscall.EAGAIN || n == 0 || ended {
			l.cs.byFD[c.fd].Store(nil)
			_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
			_ = syscall.Close(c.fd)
			c.fd = -1
			if c.ws && c.cstate != 3 {
				l.st.codes["1006"]++ // no close frame
			}
			l.mu.Unlock()
			l.cs.closed.Add(1)
			return
		}
		l.mu.Unlock()
		if err == syscall.EAGAIN || n < len(l.buf) {
			return
		}
	}
}

// body feeds received bytes to the connection's parser (l.mu held).
func (c *clientConn) body(l *pollLoop, p []byte, now int64) {
	if c.ws {
		c.wsFeed(l, p, now)
		return
	}
	if !c.chunked {
		c.feed(l, p, now)
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
			c.feed(l, p[:k], now)
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

// feed splits an SSE payload into lines, keeping a partial last line.
func (c *clientConn) feed(l *pollLoop, p []byte, now int64) {
	if len(c.pend) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.pend = append(c.pend, p...)
			return
		}
		c.pend = append(c.pend, p[:i]...)
		c.line(l, c.pend, now)
		c.pend = c.pend[:0]
		p = p[i+1:]
	}
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		c.line(l, p[:i], now)
		p = p[i+1:]
	}
	if len(p) > 0 {
		c.pend = append(c.pend, p...)
	}
}

func (c *clientConn) line(l *pollLoop, b []byte, now int64) {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	d, ok := bytes.CutPrefix(b, []byte("data:"))
	if !ok {
		return // event:, id:, retry:, comments, blank lines
	}
	d = bytes.TrimPrefix(d, []byte(" "))
	if c.cs.pongQ != nil {
		switch {
		case len(d) == 2 && d[0] == '{' && d[1] == '}': // centrifuge's ping
			if c.session != "" {
				select {
				case c.cs.pongQ <- pongReq{c.node, c.session, now}:
				default:
					c.cs.pongErrs.Add(1)
				}
			}
			return
		case c.session == "" && bytes.Contains(d, []byte(`"connect":`)):
			var r struct {
				Connect struct {
					Session string `json:"session"`
					Node    string `json:"node"`
				} `json:"connect"`
			}
			if json.Unmarshal(d, &r) == nil {
				c.session, c.node = r.Connect.Session, r.Connect.Node
			}
			return
		}
	}
	l.deliveries(d, now)
}

var tKey = []byte(`"t":`)

// deliveries counts every `"t":<unix ns>` in p as one delivery and records
// its delay (l.mu held).
func (l *pollLoop) deliveries(p []byte, now int64) {
	var n int64
	for {
		i := bytes.Index(p, tKey)
		if i < 0 {
			break
		}
		p = p[i+len(tKey):]
		var t int64
		j := 0
		for ; j < len(p) && p[j] >= '0' && p[j] <= '9'; j++ {
			t = t*10 + int64(p[j]-'0')
		}
		p = p[j:]
		n++
		if t > 0 {
			l.st.lat.Add(time.Duration(now - t))
		}
	}
	if n == 0 {
		return
	}
	if l.st.firstNs == 0 {
		l.st.firstNs = now
	}
	l.st.lastNs = now
	l.st.events += n
	l.cs.events.Add(n)
}

// ponger posts centrifuge SSE pongs to the emulation endpoint, as
// centrifuge-js does: {"node":…,"session":…,"data":"{}"} (with the JSON
// protocol, data is a string holding the commands; {} is the pong).
func (cs *clientSet) ponger() {
	for p := range cs.pongQ {
		body, _ := json.Marshal(map[string]any{"node": p.node, "session": p.session, "data": "{}"})
		resp, err := cs.pongHTTP.Post(cs.emulation, "application/json", bytes.NewReader(body))
		if err != nil {
			cs.pongErrs.Add(1)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			cs.pongErrs.Add(1)
			continue
		}
		cs.pongs.Add(1)
		d := time.Now().UnixNano() - p.at
		for cur := cs.pongMax.Load(); d > cur && !cs.pongMax.CompareAndSwap(cur, d); cur = cs.pongMax.Load() {
		}
	}
}

// pongers is how many emulation posts one client process has in flight at most.
const pongers = 64

// pongReq is a pong to post for the ping received at at.
type pongReq struct {
	node, session string
	at            int64
}

func (cs *clientSet) list() []*clientConn {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]*clientConn(nil), cs.conns...)
}

func (cs *clientSet) stats(withHist bool) clientStats {
	st := clientStats{Opened: cs.opened.Load(), Failed: cs.failed.Load(), Closed: cs.closed.Load(),
		Pongs: cs.pongs.Load(), PongErrs: cs.pongErrs.Load(), PongMaxMs: cs.pongMax.Load() / 1e6, CPUSeconds: cpuSeconds(), Codes: map[string]int{}}
	if e, ok := cs.firstErr.Load().(string); ok {
		st.FirstErr = e
	}
	var h latency.Hist
	for _, l := range cs.loops {
		l.mu.Lock()
		st.Events += l.st.events
		if l.st.firstNs != 0 && (st.FirstNs == 0 || l.st.firstNs < st.FirstNs) {
			st.FirstNs = l.st.firstNs
		}
		st.LastNs = max(st.LastNs, l.st.lastNs)
		if withHist {
			h.Merge(&l.st.lat)
		}
		for k, v := range l.st.codes {
			st.Codes[k] += v
		}
		l.mu.Unlock()
	}
	if withHist {
		st.Hist = h.Sparse()
	}
	return st
}

// reset zeroes the delivery counters and histograms (not the connection
// counts and close codes).
func (cs *clientSet) reset() {
	for _, l := range cs.loops {
		l.mu.Lock()
		l.st.events, l.st.firstNs, l.st.lastNs = 0, 0, 0
		l.st.lat = latency.Hist{}
		l.mu.Unlock()
	}
	cs.events.Store(0)
}

// closeAll stops the poll loops and closes every connection (with RST:
// SO_LINGER 0 was set at dial).
func (cs *clientSet) closeAll() {
	cs.stopping.Store(true)
	cs.loopWG.Wait()
	for _, c := range cs.list() {
		if c.fd > 0 {
			_ = syscall.Close(c.fd)
			c.fd = -1
		}
		_ = c.conn.Close()
	}
}

// cpuSeconds returns the process's user + system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
