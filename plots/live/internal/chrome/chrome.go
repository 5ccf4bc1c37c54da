// Package chrome drives a headless Chromium over the DevTools protocol on
// a pipe (--remote-debugging-pipe: JSON messages ended by NUL on file
// descriptors 3 and 4), with no dependency: open a page, evaluate
// JavaScript in it, take a screenshot. The live page's browser test and
// the README's screenshot use it; a page with an open event stream never
// "finishes loading", which --screenshot and --dump-dom wait for.
package chrome

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Find returns the Chromium to run: $GVDB_CHROMIUM, else chromium,
// chromium-browser, google-chrome or google-chrome-stable on the PATH.
func Find() (string, error) {
	if p := os.Getenv("GVDB_CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("GVDB_CHROMIUM: %w", err)
		}
		return path, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on the PATH (Debian: apt-get install chromium; or set GVDB_CHROMIUM)")
}

// Browser is a headless Chromium.
type Browser struct {
	cmd    *exec.Cmd
	in     *os.File // its fd 3: our commands
	out    *os.File // its fd 4: its answers
	mu     sync.Mutex
	next   int
	wait   map[int]chan reply
	done   chan struct{} // closed when its output ends
	stderr *limited
}

type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// limited keeps the first bytes written to it.
type limited struct {
	mu  sync.Mutex
	buf []byte
}

func (l *limited) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := 8192 - len(l.buf); n > 0 {
		l.buf = append(l.buf, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

// Start runs a headless Chromium at path with a profile in userDir (a
// fresh, empty directory).
func Start(path, userDir string) (*Browser, error) {
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		cmdR.Close()
		cmdW.Close()
		return nil, err
	}
	cmd := exec.Command(path, "--headless", "--remote-debugging-pipe", "--user-data-dir="+userDir,
		"--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-sync", "--mute-audio", "--hide-scrollbars",
		"--disable-dev-shm-usage", "about:blank")
	cmd.ExtraFiles = []*os.File{cmdR, outW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers go with it
	b := &Browser{cmd: cmd, in: cmdW, out: outR, wait: map[int]chan reply{}, done: make(chan struct{}), stderr: &limited{}}
	cmd.Stderr = b.stderr
	err = cmd.Start()
	cmdR.Close()
	outW.Close()
	if err != nil {
		cmdW.Close()
		outR.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go b.read()
	return b, nil
}

// read dispatches answers to their callers; events are dropped.
func (b *Browser) read() {
	defer close(b.done)
	r := bufio.NewReaderSize(b.out, 1<<20)
	for {
		msg, err := r.ReadBytes(0)
		if err != nil {
			return
		}
		var m struct {
			ID *int `json:"id"`
			reply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == nil {
			continue
		}
		b.mu.Lock()
		ch := b.wait[*m.ID]
		delete(b.wait, *m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.reply
		}
	}
}

// call sends a command (to a page's session when session is set) and
// decodes its result into out.
func (b *Browser) call(ctx context.Context, session, method string, params, out any) error {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan reply, 1)
	b.wait[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if params == nil {
		msg["params"] = struct{}{}
	}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := b.in.Write(append(raw, 0)); err != nil {
		return fmt.Errorf("%s: %w (chromium: %s)", method, err, b.stderr.buf)
	}
	select {
	case rep := <-ch:
		if rep.Error != nil {
			return fmt.Errorf("%s: %s", method, rep.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(rep.Result, out)
		}
		return nil
	case <-b.done:
		b.stderr.mu.Lock()
		defer b.stderr.mu.Unlock()
		return fmt.Errorf("%s: chromium exited (%s)", method, b.stderr.buf)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Page is a browser tab.
type Page struct {
	b       *Browser
	session string
}

// Open opens url in a new tab of the given viewport size.
func (b *Browser) Open(ctx context.Context, url string, width, height int) (*Page, error) {
	var t struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &t); err != nil {
		return nil, err
	}
	var s struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": t.TargetID, "flatten": true}, &s); err != nil {
		return nil, err
	}
	p := &Page{b: b, session: s.SessionID}
	if err := b.call(ctx, p.session, "Emulation.setDeviceMetricsOverride",
		map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		return nil, err
	}
	// The page's uncaught errors, rejected promises and Content Security
	// Policy violations, from its first script on (Errors).
	if err := b.call(ctx, p.session, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": `window.__chromeErrors = [];
addEventListener("error", (e) => __chromeErrors.push("error: " + e.message));
addEventListener("unhandledrejection", (e) => __chromeErrors.push("rejection: " + e.reason));
document.addEventListener("securitypolicyviolation", (e) => __chromeErrors.push("CSP: " + e.violatedDirective + " blocked " + e.blockedURI + " " + e.sample));`}, nil); err != nil {
		return nil, err
	}
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := b.call(ctx, p.session, "Page.navigate", map[string]any{"url": url}, &nav); err != nil {
		return nil, err
	}
	if nav.ErrorText != "" {
		return nil, fmt.Errorf("open %s: %s", url, nav.ErrorText)
	}
	return p, nil
}

// Eval evaluates a JavaScript expression (awaiting a promise) and decodes
// its value into out.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := p.b.call(ctx, p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("%s: %s %s", expr, r.Exception.Text, r.Exception.Exception.Description)
	}
	if out == nil || len(r.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// Errors returns the page's uncaught errors, rejected promises and
// Content Security Policy violations so far.
func (p *Page) Errors(ctx context.Context) ([]string, error) {
	var errs []string
	err := p.Eval(ctx, "window.__chromeErrors || []", &errs)
	return errs, err
}

// WaitFor evaluates a boolean expression every 100 ms until it is true.
func (p *Page) WaitFor(ctx context.Context, expr string) error {
	for {
		var ok bool
		if err := p.Eval(ctx, expr, &ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", expr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Screenshot returns a PNG of the whole page (beyond the viewport).
func (p *Page) Screenshot(ctx context.Context) ([]byte, error) {
	var r struct {
		Data string `json:"data"`
	}
	if err := p.b.call(ctx, p.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(r.Data)
}

// Close asks the browser to quit, and kills it if it has not within 5 s,
// and any helper of its left behind.
func (b *Browser) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	b.call(ctx, "", "Browser.close", nil, nil)
	cancel()
	exited := make(chan error, 1)
	go func() { exited <- b.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL) // helpers left behind, if any
	b.in.Close()
	select {
	case <-b.done:
	case <-time.After(time.Second):
	}
	b.out.Close()
	return nil
}
