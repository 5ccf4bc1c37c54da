package report

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gvdb/db"
	"gvdb/query"
)

// RunRow is one line of the report's runs table.
type RunRow struct {
	Name, Model, Data, Status string
	LR                        float64
	Batch                     int
	Steps                     int64
	Full, Sampled             int
	TestAccuracy              float64 // the last logged test_accuracy (NaN: none)
	Perturbations             string
}

// runRows describes runs for the runs table.
func runRows(d *db.DB, runs []*db.Run) ([]RunRow, error) {
	var rows []RunRow
	for _, r := range runs {
		row := RunRow{Name: r.Name, Model: r.Model, Data: r.Dataset, Status: r.Status, LR: r.LR, Batch: r.BatchSize, Steps: r.Steps,
			TestAccuracy: math.NaN(), Perturbations: perturbations(r)}
		if h := r.Params["hidden"]; h != "" {
			row.Model += " " + h
		}
		infos, err := d.SnapshotInfos(r, db.AllSteps)
		if err != nil {
			return nil, err
		}
		for _, in := range infos {
			if in.Population == db.Full {
				row.Full++
			} else {
				row.Sampled++
			}
		}
		err = d.Scalars(r, db.AllSteps, func(s db.ScalarRow) error {
			if v, ok := s.Values["test_accuracy"]; ok && !math.IsNaN(v) {
				row.TestAccuracy = v
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// page is what index.html shows.
type page struct {
	Store    string
	Summary  string
	Runs     []RunRow
	Findings []Finding
	Sections []section
	Glossary []term
}

type section struct {
	Name    string
	Figures []figureView
}

type figureView struct {
	Figure
	SVG template.HTML // the figure's SVG, inlined
}

type term struct{ Name, Doc string }

var funcs = template.FuncMap{
	"num": func(v float64) string {
		if math.IsNaN(v) {
			return "–"
		}
		return fmt.Sprintf("%.4g", v)
	},
	"verdictClass": func(v string) string { return strings.ReplaceAll(v, " ", "-") },
}

var pageTemplate = template.Must(template.New("index").Funcs(funcs).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gvdb report</title>
<style>
body{font-family:Georgia,serif;max-width:52em;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1,h2,h3{font-family:Helvetica,Arial,sans-serif}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;font-size:.9em;margin:1em 0}
th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.holds{color:#006d4f;font-weight:bold}.does-not-hold{color:#a33a00;font-weight:bold}.not-measurable-here{color:#666}
figure{margin:1em 0 2em}
figure svg{width:100%;height:auto;border:1px solid #e4e4e4}
figcaption{font-size:.95em;margin-top:.4em}
details{margin-top:.4em;font-size:.85em}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}
dt{font-family:monospace;font-weight:bold;margin-top:.5em}
</style></head><body>
<h1>gvdb report</h1>
<p>{{.Summary}}</p>
<h2 id="runs">Runs</h2>
<table class="runs">
<tr><th>run</th><th>model</th><th>data</th><th>lr</th><th>batch</th><th>steps</th><th>status</th><th>full snapshots</th><th>sampled snapshots</th><th>test accuracy</th></tr>
{{range .Runs}}<tr><td>{{.Name}}</td><td>{{.Model}}</td><td>{{.Data}}{{if .Perturbations}} ({{.Perturbations}}){{end}}</td><td class="n">{{.LR}}</td><td class="n">{{.Batch}}</td><td class="n">{{.Steps}}</td><td>{{.Status}}</td><td class="n">{{.Full}}</td><td class="n">{{.Sampled}}</td><td class="n">{{num .TestAccuracy}}</td></tr>
{{end}}</table>
<h2 id="findings">Findings</h2>
<p>The claims of <i>A Study of Gradient Variance in Deep Learning</i>, each measured on the runs above.</p>
<table class="findings">
<tr><th>claim</th><th>measured</th><th>value</th><th>verdict</th><th>why</th></tr>
{{range .Findings}}<tr><td>{{.Claim}}</td><td>{{.Measure}}</td><td class="n">{{num .Value}}</td><td class="{{verdictClass .Verdict}}">{{.Verdict}}</td><td>{{.Why}}</td></tr>
{{end}}</table>
{{range .Sections}}<h2>{{.Name}}</h2>
{{range .Figures}}<figure>
<h3>{{.Heading}}</h3>
{{.SVG}}
<figcaption>{{.Caption}}</figcaption>
<details><summary>query</summary><pre>{{.Query}}</pre></details>
</figure>
{{end}}{{end}}<h2 id="glossary">Glossary</h2>
<dl>
{{range .Glossary}}<dt>{{.Name}}</dt><dd>{{.Doc}}</dd>
{{end}}</dl>
<p>Store: <code>{{.Store}}</code>. Every figure is also in the report's folder as a PNG and an SVG.</p>
</body></html>
`))

// svgHeader is what precedes an SVG's root element.
var svgHeader = regexp.MustCompile(`(?s)^.*?(<svg\b)`)

// writeIndex writes index.md and a self-contained index.html (inline
// CSS, figures inlined as SVG, no external requests).
func writeIndex(out, store string, runs []RunRow, findings []Finding, figs []Figure) error {
	p := page{Store: store, Runs: runs, Findings: findings, Summary: summary(runs, findings, figs)}
	for _, doc := range query.StatisticDocs() {
		name, text, _ := strings.Cut(doc, ": ")
		p.Glossary = append(p.Glossary, term{name, text})
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# gvdb report\n\n%s\n\n", p.Summary)
	for _, f := range figs {
		raw, err := os.ReadFile(filepath.Join(out, svgName(f.File)))
		if err != nil {
			return fmt.Errorf("report index: %w", err)
		}
		svg := svgHeader.ReplaceAll(raw, []byte("$1"))
		if n := len(p.Sections); n == 0 || p.Sections[n-1].Name != f.Section {
			p.Sections = append(p.Sections, section{Name: f.Section})
		}
		s := &p.Sections[len(p.Sections)-1]
		s.Figures = append(s.Figures, figureView{f, template.HTML(svg)})
		fmt.Fprintf(&md, "## %s\n\n![%s](%s)\n\n%s\n\n```\n%s\n```\n\n", f.Heading, f.Heading, f.File, f.Caption, f.Query)
	}
	var h bytes.Buffer
	if err := pageTemplate.Execute(&h, p); err != nil {
		return fmt.Errorf("report index: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "index.md"), []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("report index: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "index.html"), h.Bytes(), 0o644); err != nil {
		return fmt.Errorf("report index: %w", err)
	}
	return nil
}

// summary is the report's opening paragraph.
func summary(runs []RunRow, findings []Finding, figs []Figure) string {
	names := make([]string, len(runs))
	full := 0
	for i, r := range runs {
		names[i] = r.Name
		if r.Full > 0 {
			full++
		}
	}
	count := map[string]int{}
	for _, f := range findings {
		count[f.Verdict]++
	}
	return fmt.Sprintf("%d runs (%s), %d of them with full snapshots of the training set, measured as in "+
		"A Study of Gradient Variance in Deep Learning (Faghri et al., 2020): the variance of SG-B, SG-2B, SVRG and "+
		"Gradient Clustering over training, normalized variance beside the loss, and GC's distortion against K, in %d figures. "+
		"Of the paper's %d claims checked in the Findings table, %s, %s and %s on these runs. "+
		"Every figure shows the query that made it.",
		len(runs), strings.Join(names, ", "), full, len(figs), len(findings),
		agree(count[Holds], "holds", "hold"), agree(count[DoesNotHold], "does not hold", "do not hold"),
		agree(count[NotMeasurable], "is not measurable", "are not measurable"))
}

// agree writes n and the verb phrase in the number n takes.
func agree(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
