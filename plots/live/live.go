package live

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"gvdb/db"
	"gvdb/plots"
	"gvdb/query"
	"gvdb/query/parser"
)

//go:embed page
var page embed.FS

// Config sets a server's limits; zero values take the defaults.
type Config struct {
	// Token, when set, must come with every request: the header
	// "Authorization: Bearer TOKEN" or the parameter token=TOKEN. Any
	// address other than loopback requires one.
	Token string
	// MaxQuery bounds a query's text (default 16 KiB; past it: 413).
	MaxQuery int
	// MaxQueries bounds the queries and figures evaluated at once
	// (default 4; past it: 429).
	MaxQueries int
	// MaxStreams bounds the open event streams (default 16; past it: 429).
	MaxStreams int
	// QueryTimeout bounds one query (default 30 s; past it: 503).
	QueryTimeout time.Duration
	// MemoryBudget bounds a query's large computations (default 1 GiB).
	MemoryBudget int64
	// Poll is how often the event stream looks for new snapshots
	// (default 1 s).
	Poll time.Duration
}

// Server answers a store's HTTP API and page.
type Server struct {
	d       *db.DB
	cfg     Config
	queries chan struct{}
	streams chan struct{}
	token   [32]byte
}

// New returns a server of d's data.
func New(d *db.DB, cfg Config) *Server {
	if cfg.MaxQuery <= 0 {
		cfg.MaxQuery = 16 << 10
	}
	if cfg.MaxQueries <= 0 {
		cfg.MaxQueries = 4
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 16
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if cfg.MemoryBudget <= 0 {
		cfg.MemoryBudget = 1 << 30
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	return &Server{d: d, cfg: cfg, queries: make(chan struct{}, cfg.MaxQueries),
		streams: make(chan struct{}, cfg.MaxStreams), token: sha256.Sum256([]byte(cfg.Token))}
}

// ErrNeedToken refuses a non-loopback address without a token.
var ErrNeedToken = errors.New("serving beyond this machine needs a token")

// CheckAddr refuses an address that is not loopback when there is no
// token ("" host, 0.0.0.0 and [::] listen on every interface).
func CheckAddr(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if token != "" || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s is not a loopback address (give --token or GVDB_TOKEN, or listen on 127.0.0.1)", ErrNeedToken, addr)
}

// ListenAndServe serves s on addr until ctx ends; ready, if set, is told
// the address it listens on.
func (s *Server) ListenAndServe(ctx context.Context, addr string, ready func(net.Addr)) error {
	if err := CheckAddr(addr, s.cfg.Token); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(ln.Addr())
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 32 << 10,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		hs.Close()
	}()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ServeHTTP checks the request (token, method, size) and routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	if s.cfg.Token != "" {
		got := r.URL.Query().Get("token")
		if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			got = a
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], s.token[:]) != 1 {
			httpError(w, http.StatusUnauthorized, "a valid token is required (Authorization: Bearer TOKEN, or ?token=)", nil)
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !(r.Method == http.MethodPost && r.URL.Path == "/api/query") {
		httpError(w, http.StatusMethodNotAllowed, "read-only: GET (or POST a query to /api/query)", nil)
		return
	}
	if len(r.URL.RawQuery) > 2*s.cfg.MaxQuery+1024 || r.ContentLength > int64(s.cfg.MaxQuery) {
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request too large (a query has at most %d bytes)", s.cfg.MaxQuery), nil)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxQuery))
	switch r.URL.Path {
	case "/api/query":
		s.limited(w, r, s.apiQuery)
	case "/api/runs":
		s.limited(w, r, func(w http.ResponseWriter, r *http.Request) { s.table(w, r, "SHOW RUNS") })
	case "/api/steps":
		s.limited(w, r, func(w http.ResponseWriter, r *http.Request) {
			s.table(w, r, "SHOW STEPS FROM "+parser.Quote(r.URL.Query().Get("run")))
		})
	case "/api/figure":
		s.limited(w, r, s.apiFigure)
	case "/api/events":
		s.events(w, r)
	default:
		s.static(w, r)
	}
}

// limited runs fn when fewer than MaxQueries run, with QueryTimeout.
func (s *Server) limited(w http.ResponseWriter, r *http.Request, fn http.HandlerFunc) {
	select {
	case s.queries <- struct{}{}:
		defer func() { <-s.queries }()
	default:
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusTooManyRequests, fmt.Sprintf("%d queries are running: try again shortly", s.cfg.MaxQueries), nil)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
	defer cancel()
	fn(w, r.WithContext(ctx))
}

// queryText is the q parameter, or a POSTed body.
func (s *Server) queryText(w http.ResponseWriter, r *http.Request) (string, bool) {
	q := r.URL.Query().Get("q")
	if r.Method == http.MethodPost {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request too large (a query has at most %d bytes)", s.cfg.MaxQuery), nil)
			return "", false
		}
		q = string(raw)
	}
	if len(q) > s.cfg.MaxQuery {
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("query too large (at most %d bytes)", s.cfg.MaxQuery), nil)
		return "", false
	}
	if strings.TrimSpace(q) == "" {
		httpError(w, http.StatusBadRequest, "give a query: q=", nil)
		return "", false
	}
	return q, true
}

func (s *Server) options() query.Options {
	return query.Options{NoFileWrites: true, MemoryBudget: s.cfg.MemoryBudget, Workers: 2}
}

func (s *Server) apiQuery(w http.ResponseWriter, r *http.Request) {
	q, ok := s.queryText(w, r)
	if !ok {
		return
	}
	s.table(w, r, q)
}

// table evaluates one statement and answers its rows and warnings.
func (s *Server) table(w http.ResponseWriter, r *http.Request, q string) {
	st, err := parser.ParseStatement(q)
	if err != nil {
		queryError(w, err)
		return
	}
	if p, ok := st.(*parser.Plot); ok {
		queryError(w, &parser.Error{Pos: p.To.Pos, Msg: "PLOT ... TO writes a file, which this server does not: use SELECT here, or /api/figure?q= for the figure"})
		return
	}
	res, err := query.Eval(r.Context(), s.d, st, s.options())
	if err != nil {
		queryError(w, err)
		return
	}
	var rows bytes.Buffer
	if err := res.Table().Write(&rows, "ndjson"); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"columns": res.Columns, "rows": json.RawMessage(bytes.TrimSpace(rows.Bytes())), "warnings": nonNil(res.Warnings)})
}

// CoreQuery is the page's figure of a run whose batch size is batch: the
// variance of SG-B and SG-2B, nvar, gns and, when the run records it,
// the loss (the report's core figure).
func CoreQuery(run string, batch int, loss bool) string {
	if batch < 1 {
		batch = 128
	}
	l := ""
	if loss {
		l = ", loss"
	}
	return fmt.Sprintf("PLOT variance(%d), variance(%d), nvar(%d), gns%s FROM %s TO 'live.svg'", batch, 2*batch, batch, l, parser.Quote(run))
}

// errFound stops a scan.
var errFound = errors.New("found")

// hasLoss says whether run r records a loss (its first scalar row with
// one ends the scan).
func (s *Server) hasLoss(r *db.Run) (bool, error) {
	err := s.d.Scalars(r, db.AllSteps, func(row db.ScalarRow) error {
		if _, ok := row.Values["loss"]; ok {
			return errFound
		}
		return nil
	})
	if err == errFound {
		return true, nil
	}
	return false, err
}

// apiFigure renders q, or with run= and no q the run's CoreQuery.
func (s *Server) apiFigure(w http.ResponseWriter, r *http.Request) {
	var q string
	if name := r.URL.Query().Get("run"); name != "" && r.URL.Query().Get("q") == "" {
		run, err := s.d.Run(name)
		if err != nil {
			queryError(w, err)
			return
		}
		loss, err := s.hasLoss(run)
		if err != nil {
			httpError(w, http.StatusServiceUnavailable, err.Error(), nil)
			return
		}
		q = CoreQuery(run.Name, run.Config.BatchSize, loss)
	} else {
		var ok bool
		if q, ok = s.queryText(w, r); !ok {
			return
		}
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "svg"
	}
	if format != "svg" && format != "png" {
		httpError(w, http.StatusBadRequest, "format is svg or png", nil)
		return
	}
	st, err := parser.ParseStatement(q)
	if err != nil {
		queryError(w, err)
		return
	}
	o := plots.Options{Width: figWidth, Height: figHeight}
	switch x := st.(type) {
	case *parser.Plot: // its TO is not written: the figure is the answer
		o.Scale, o.Title = strings.ToLower(string(x.Scale)), query.Title(x)
		st = x.AsSelect()
	case *parser.Select:
	default:
		queryError(w, &parser.Error{Msg: "a figure needs PLOT or SELECT"})
		return
	}
	res, err := query.Eval(r.Context(), s.d, st, s.options())
	if err != nil {
		queryError(w, err)
		return
	}
	fig, warnings, err := plots.Lines(res, o)
	if err != nil {
		queryError(w, err)
		return
	}
	body, ctype, err := render(fig, format)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", ctype)
	for _, wn := range warnings {
		w.Header().Add("X-Gvdb-Warning", strings.Map(printable, wn))
	}
	w.Write(body)
}

func printable(r rune) rune {
	if r < 0x20 || r > 0x7e {
		return ' '
	}
	return r
}

// figWidth and figHeight are the size of the server's figures, the
// report's (plots' default); a figure of stacked panels is taller
// (figureSize).
const figWidth, figHeight = 6 * vg.Inch, 4 * vg.Inch

// figureSize is figWidth x figHeight, taller for more than two stacked
// panels (2.1 inches each, so that their tick labels stay apart) or small
// multiples.
func figureSize(fig *plots.Figure) (w, h vg.Length) {
	h = figHeight
	if rows := len(fig.Panels); rows > 2 && fig.Height == 0 {
		h = vg.Length(rows)*2.1*vg.Inch + 0.9*vg.Inch
	}
	return figWidth, max(h, fig.Height)
}

// render draws a figure in memory: SVG with one PointClass group per
// data point, or PNG.
func render(fig *plots.Figure, format string) ([]byte, string, error) {
	width, height := figureSize(fig)
	if format != "png" {
		b, err := renderSVG(fig, width, height)
		return b, "image/svg+xml", err
	}
	c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(110))}
	fig.Draw(draw.New(c))
	var b bytes.Buffer
	_, err := c.WriteTo(&b)
	return b.Bytes(), "image/png", err
}

// events streams "snapshot" events ({"run", "step"}) for each snapshot
// committed after the stream began, each once, in step order per run.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusTooManyRequests, fmt.Sprintf("%d event streams are open", s.cfg.MaxStreams), nil)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming unsupported", nil)
		return
	}
	next := map[string]int64{} // run -> first step not yet seen
	if err := s.newSnapshots(next, nil); err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": gvdb snapshots\n\n")
	fl.Flush()
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		err := s.newSnapshots(next, func(run string, step int64) error {
			b, _ := json.Marshal(map[string]any{"run": run, "step": step})
			_, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b)
			return err
		})
		if err != nil {
			fmt.Fprintf(w, "event: failure\ndata: %q\n\n", err.Error())
			fl.Flush()
			return
		}
		fl.Flush()
	}
}

// newSnapshots calls fn (if set) for each snapshot at or past next[run]
// and moves next past it; runs not in next start at their end.
func (s *Server) newSnapshots(next map[string]int64, fn func(string, int64) error) error {
	runs, err := s.d.Runs()
	if err != nil {
		return err
	}
	for _, r := range runs {
		from, seen := next[r.Name]
		infos, err := s.d.SnapshotInfos(r, db.Window{From: from, To: math.MaxInt64})
		if err != nil {
			return err
		}
		for _, in := range infos {
			if seen && fn != nil {
				if err := fn(r.Name, in.Step); err != nil {
					return err
				}
			}
			next[r.Name] = in.Step + 1
		}
		if _, ok := next[r.Name]; !ok {
			next[r.Name] = 0
		}
	}
	return nil
}

func (s *Server) static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if name == "" {
		name = "index.html"
	}
	raw, err := fs.ReadFile(page, "page/"+name)
	if err != nil || strings.Contains(name, "/") {
		httpError(w, http.StatusNotFound, "not found", nil)
		return
	}
	switch {
	case strings.HasSuffix(name, ".html"):
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
	case strings.HasSuffix(name, ".js"):
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case strings.HasSuffix(name, ".css"):
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Write(raw)
}

// queryError answers a query's error: 400 with its position and message
// (hints are part of it), 503 past the time limit.
func queryError(w http.ResponseWriter, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		httpError(w, http.StatusServiceUnavailable, "the query ran past the server's time limit: "+err.Error(), nil)
		return
	}
	extra := map[string]any{}
	var pe *parser.Error
	if errors.As(err, &pe) && pe.Pos.Line > 0 {
		extra["line"], extra["column"] = pe.Pos.Line, pe.Pos.Column
	}
	httpError(w, http.StatusBadRequest, err.Error(), extra)
}

func httpError(w http.ResponseWriter, code int, msg string, extra map[string]any) {
	body := map[string]any{"error": msg}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w) // escapes <, > and & in strings
	enc.Encode(v)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
