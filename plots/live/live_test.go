package live

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"gvdb/db"
	"gvdb/db/synth"
	"gvdb/ingest"
)

// liveStore opens a store for writing with run "syn" (an MLP 20-16-4,
// 8 examples a snapshot at steps 0, 100, 200) and returns it with a
// function that writes the snapshot at a further step.
func liveStore(t *testing.T) (*db.DB, func(step int64)) {
	t.Helper()
	d, err := db.Open(t.TempDir(), db.Options{Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	layers := synth.MLP(20, 16, 4)
	r := &db.Run{Name: "syn", Status: db.StatusRunning, Config: db.Config{Model: "mlp", Dataset: "synthetic", LR: 0.1, BatchSize: 8}}
	r.Layers = synth.Schema(layers)
	if err := d.CreateRun(r); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	write := func(step int64) {
		w, err := ingest.NewWriter(d, "syn", ingest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		blocks := synth.Snapshot(rng, 8, layers)
		s := &ingest.Snapshot{Step: step}
		for _, l := range layers {
			s.Blocks = append(s.Blocks, ingest.NamedBlock{Layer: l.Name, Block: blocks[l.Name]})
		}
		if err := w.Write(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for step := int64(0); step <= 200; step += 100 {
		write(step)
	}
	return d, write
}

func get(t *testing.T, u string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

type answer struct {
	Columns  []string         `json:"columns"`
	Rows     []map[string]any `json:"rows"`
	Warnings []string         `json:"warnings"`
	Error    string           `json:"error"`
	Line     int              `json:"line"`
	Column   int              `json:"column"`
}

func decode(t *testing.T, body []byte) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return a
}

func TestAPI(t *testing.T) {
	d, _ := liveStore(t)
	ts := httptest.NewServer(New(d, Config{MaxQuery: 4096}))
	defer ts.Close()
	t.Chdir(t.TempDir()) // no figure file may appear here
	q := func(s string) string { return url.QueryEscape(s) }

	resp, body := get(t, ts.URL+"/api/runs")
	if a := decode(t, body); resp.StatusCode != 200 || len(a.Rows) != 1 || a.Rows[0]["run"] != "syn" || a.Rows[0]["status"] != "running" {
		t.Fatalf("runs: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("runs headers: %v", resp.Header)
	}
	if resp, body = get(t, ts.URL+"/api/steps?run=syn"); resp.StatusCode != 200 || len(decode(t, body).Rows) != 3 {
		t.Fatalf("steps: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, ts.URL+"/api/query?q="+q("SELECT step, variance, nvar FROM 'syn'"))
	if a := decode(t, body); resp.StatusCode != 200 || len(a.Rows) != 3 || a.Columns[2] != "nvar" || a.Rows[2]["step"] != 200.0 {
		t.Fatalf("query: %d %s", resp.StatusCode, body)
	}
	// Errors: 400 with the position and the hint; text is escaped.
	resp, body = get(t, ts.URL+"/api/query?q="+q("SELECT nvar FROM 'syn' WHERE <script>"))
	if a := decode(t, body); resp.StatusCode != 400 || a.Line != 1 || a.Column == 0 || strings.Contains(string(body), "<script>") {
		t.Fatalf("bad query: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, ts.URL+"/api/query?q="+q("SELECT nvar FROM 'sym'"))
	if resp.StatusCode != 400 || !strings.Contains(decode(t, body).Error, `"syn"`) {
		t.Fatalf("unknown run: %d %s", resp.StatusCode, body)
	}
	resp, body = get(t, ts.URL+"/api/query?q="+q("PLOT nvar FROM 'syn' TO 'x.svg'"))
	if resp.StatusCode != 400 || !strings.Contains(decode(t, body).Error, "/api/figure") {
		t.Fatalf("PLOT in /api/query: %d %s", resp.StatusCode, body)
	}
	// Figures are rendered in memory; the PLOT's file is not written.
	resp, body = get(t, ts.URL+"/api/figure?format=svg&q="+q("PLOT variance, nvar FROM 'syn' TO 'x.svg'"))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" || !strings.Contains(string(body), "<svg") {
		t.Fatalf("svg figure: %d %.300s", resp.StatusCode, body)
	}
	resp, body = get(t, ts.URL+"/api/figure?format=png&q="+q("SELECT step, nvar FROM 'syn'"))
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" || !strings.HasPrefix(string(body), "\x89PNG") {
		t.Fatalf("png figure: %d %.300s", resp.StatusCode, body)
	}
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Fatalf("a figure wrote %v", entries[0].Name())
	}
	// Sizes and methods.
	if resp, body = get(t, ts.URL+"/api/query?q="+strings.Repeat("x", 20000)); resp.StatusCode != 413 {
		t.Fatalf("long query: %d %s", resp.StatusCode, body)
	}
	big, err := http.Post(ts.URL+"/api/query", "text/plain", strings.NewReader(strings.Repeat("x", 5000)))
	if err != nil || big.StatusCode != 413 {
		t.Fatalf("big body: %v %v", big.StatusCode, err)
	}
	big.Body.Close()
	if r, err := http.Post(ts.URL+"/api/runs", "text/plain", nil); err != nil || r.StatusCode != 405 {
		t.Fatalf("POST /api/runs: %v", err)
	}
	// The page: embedded, no external requests.
	resp, body = get(t, ts.URL+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "app.js") {
		t.Fatalf("page: %d %s", resp.StatusCode, body)
	}
	for _, f := range []string{"/", "/app.js", "/style.css"} {
		_, body := get(t, ts.URL+f)
		if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") || strings.Contains(string(body), "//cdn") {
			t.Errorf("%s refers outside the server", f)
		}
	}
	if resp, _ = get(t, ts.URL+"/../db.go"); resp.StatusCode != 404 {
		t.Fatalf("outside the page: %d", resp.StatusCode)
	}
}

func TestToken(t *testing.T) {
	d, _ := liveStore(t)
	ts := httptest.NewServer(New(d, Config{Token: "s3cret"}))
	defer ts.Close()
	for _, c := range []struct {
		path string
		hdr  []string
		want int
	}{
		{"/api/runs", nil, 401},
		{"/api/runs?token=wrong", nil, 401},
		{"/", []string{"Authorization", "Bearer s3cre"}, 401},
		{"/api/runs?token=s3cret", nil, 200},
		{"/api/runs", []string{"Authorization", "Bearer s3cret"}, 200},
	} {
		if resp, body := get(t, ts.URL+c.path, c.hdr...); resp.StatusCode != c.want {
			t.Errorf("%s %v: %d %s", c.path, c.hdr, resp.StatusCode, body)
		}
	}
	for _, c := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:8080", "", true}, {"[::1]:0", "", true}, {"localhost:0", "", true},
		{"0.0.0.0:8080", "", false}, {":8080", "", false}, {"192.168.1.2:80", "", false}, {"0.0.0.0:8080", "t", true},
	} {
		if err := CheckAddr(c.addr, c.token); (err == nil) != c.ok || err != nil && !errors.Is(err, ErrNeedToken) {
			t.Errorf("CheckAddr(%q, %q): %v", c.addr, c.token, err)
		}
	}
	s := New(d, Config{})
	if err := s.ListenAndServe(context.Background(), "0.0.0.0:0", nil); !errors.Is(err, ErrNeedToken) {
		t.Fatalf("listen on every interface without a token: %v", err)
	}
}

// Many clients at once: each gets its answer or a 429, nothing else; a
// query past its time is a 503.
func TestLimits(t *testing.T) {
	d, _ := liveStore(t)
	s := New(d, Config{MaxQueries: 2})
	ts := httptest.NewServer(s)
	defer ts.Close()
	u := ts.URL + "/api/query?q=" + url.QueryEscape("SELECT step, variance, nvar, gns FROM 'syn'")
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Second)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				resp, err := http.Get(u)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if codes[200] == 0 || codes[429] == 0 || len(codes) != 2 {
		t.Fatalf("50 clients: %v", codes)
	}
	t.Logf("50 clients for 1 s: %v", codes)
	slow := httptest.NewServer(New(d, Config{QueryTimeout: time.Nanosecond}))
	defer slow.Close()
	if resp, body := get(t, slow.URL+"/api/query?q="+url.QueryEscape("SELECT variance FROM 'syn'")); resp.StatusCode != 503 {
		t.Fatalf("past the time limit: %d %s", resp.StatusCode, body)
	}
}

// The event stream delivers each new snapshot once.
func TestEvents(t *testing.T) {
	d, write := liveStore(t)
	ts := httptest.NewServer(New(d, Config{Poll: 20 * time.Millisecond}))
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %v", resp.Header)
	}
	r := bufio.NewReader(resp.Body)
	r.ReadString('\n') // the comment that opens the stream
	go func() {
		write(300)
		time.Sleep(100 * time.Millisecond)
		write(400)
	}()
	var got []string
	for len(got) < 2 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		if s, ok := strings.CutPrefix(line, "data: "); ok {
			got = append(got, strings.TrimSpace(s))
		}
	}
	if got[0] != `{"run":"syn","step":300}` || got[1] != `{"run":"syn","step":400}` {
		t.Fatalf("events: %v", got)
	}
}

// countPoints counts the PointClass groups of an SVG figure, in all and
// by series, and checks that the figure is well-formed XML.
func countPoints(t *testing.T, svg []byte) (int, map[string]int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	n, by := 0, map[string]int{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("figure is not XML: %v", err)
		}
		if el, ok := tok.(xml.StartElement); ok && el.Name.Local == "g" {
			attrs := map[string]string{}
			for _, a := range el.Attr {
				attrs[a.Name.Local] = a.Value
			}
			if attrs["class"] == PointClass {
				n++
				by[attrs["data-series"]]++
			}
		}
	}
	return n, by
}

// Each snapshot of each series is one PointClass group, with its series,
// step and value; legend keys are not points. TestPageQuery: the page's
// core figure (/api/figure?run=) draws every series it names.
func TestFigurePoints(t *testing.T) {
	d, write := liveStore(t)
	ts := httptest.NewServer(New(d, Config{}))
	defer ts.Close()
	write(300)
	resp, body := get(t, ts.URL+"/api/figure?q="+url.QueryEscape("PLOT variance, nvar FROM 'syn' TO 'x.svg'"))
	if resp.StatusCode != 200 {
		t.Fatalf("figure: %d %s", resp.StatusCode, body)
	}
	n, by := countPoints(t, body)
	if n != 8 || by["variance(8)"] != 4 || by["nvar(8)"] != 4 {
		t.Fatalf("4 snapshots, 2 series: %d points %v", n, by)
	}
	if !strings.Contains(string(body), `data-series="nvar(8)" data-step="300" data-value="`) || !strings.Contains(string(body), "<title>nvar(8), step 300: ") {
		t.Fatalf("a point's data: %.2000s", body)
	}
	resp, body = get(t, ts.URL+"/api/figure?q="+url.QueryEscape("SELECT step, nvar FROM 'syn' WHERE step >= 100"))
	if n, by := countPoints(t, body); resp.StatusCode != 200 || n != 3 || by["nvar(8)"] != 3 {
		t.Fatalf("3 steps: %d points %v", n, by)
	}
	resp, body = get(t, ts.URL+"/api/figure?run=syn")
	if resp.StatusCode != 200 {
		t.Fatalf("core figure: %d %s", resp.StatusCode, body)
	}
	// Batch 8: SG-8 and SG-16 variance, nvar(8), gns at each snapshot (no
	// loss: the synthetic run has no scalars).
	n, by = countPoints(t, body)
	want := map[string]int{"variance(8)": 4, "variance(16)": 4, "nvar(8)": 4, "gns": 4}
	if n != 16 || !maps.Equal(by, want) {
		t.Fatalf("core figure: %d points %v, want %v", n, by, want)
	}
	// With a loss recorded, the loss too (a row at every snapshot's step).
	for _, step := range []int64{0, 100, 200, 300} {
		if err := d.PutScalars("syn", []db.ScalarRow{{Step: step, Values: map[string]float64{"loss": 1 / float64(step+1)}}}); err != nil {
			t.Fatal(err)
		}
	}
	_, body = get(t, ts.URL+"/api/figure?run=syn")
	if n, by := countPoints(t, body); n != 20 || by["loss"] != 4 {
		t.Fatalf("core figure with a loss: %d points %v", n, by)
	}
	if q := CoreQuery("it's", 0, true); q != "PLOT variance(128), variance(256), nvar(128), gns, loss FROM 'it''s' TO 'live.svg'" {
		t.Fatalf("CoreQuery: %s", q)
	}
	if resp, body = get(t, ts.URL+"/api/figure?run=nope"); resp.StatusCode != 400 || !strings.Contains(decode(t, body).Error, "nope") {
		t.Fatalf("core figure of no run: %d %s", resp.StatusCode, body)
	}
}
