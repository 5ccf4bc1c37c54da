package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	flag "github.com/spf13/pflag"
	"gonum.org/v1/plot/vg"

	"gvdb/db"
	"gvdb/plots"
	"gvdb/query"
	"gvdb/query/parser"
)

func init() {
	register("plot", "draw a figure: a query over steps, GC distortion vs K, gradient norms, cluster sizes", (*Main).plot)
}

// figureFlags are the size flags every figure takes.
type figureFlags struct {
	width, height       float64
	dpi                 int
	scale, title, style string
	fs                  *flag.FlagSet
}

func addFigureFlags(fs *flag.FlagSet) *figureFlags {
	f := &figureFlags{fs: fs}
	fs.StringVar(&f.style, "style", "", "a style preset: paper (3.5 x 2.6 in at 300 DPI, 9 pt fonts; --width, --height, --dpi override it)")
	fs.Float64Var(&f.width, "width", 6, "figure width in inches")
	fs.Float64Var(&f.height, "height", 4, "figure height in inches")
	fs.IntVar(&f.dpi, "dpi", 150, "PNG resolution in dots per inch")
	fs.StringVar(&f.scale, "scale", "", "y axis: log or linear (default: log for variances; norms: the x axis)")
	fs.StringVar(&f.title, "title", "", "figure title (default: what is plotted, its runs and population)")
	return f
}

func (f *figureFlags) options(title string) (plots.Options, error) {
	if f.width <= 0 || f.height <= 0 || f.width > 100 || f.height > 100 {
		return plots.Options{}, usagef("plot: --width and --height must be in (0, 100] inches")
	}
	if f.dpi < 10 || f.dpi > 2400 {
		return plots.Options{}, usagef("plot: --dpi must be from 10 to 2400")
	}
	if f.scale != "" && f.scale != "log" && f.scale != "linear" {
		return plots.Options{}, usagef("plot: --scale must be log or linear")
	}
	if f.title != "" {
		title = f.title
	}
	return plots.Options{Width: vg.Length(f.width) * vg.Inch, Height: vg.Length(f.height) * vg.Inch, DPI: f.dpi, Title: title, Scale: f.scale}.WithStyle(f.style, f.fs.Changed)
}

// statementOptions sizes the figure of a SELECT or PLOT: titled by
// --title, else the PLOT's TITLE, else what it plots (query.Title), and
// with a PLOT's SCALE unless --scale says otherwise.
func (f *figureFlags) statementOptions(st parser.Statement) (plots.Options, error) {
	o, err := f.options(query.Title(st))
	if p, ok := st.(*parser.Plot); ok && f.scale == "" && p.Scale != "" {
		o.Scale = strings.ToLower(string(p.Scale))
	}
	return o, err
}

// drawStatement evaluates a SELECT or PLOT and draws it to file; it returns
// the statement's warnings, then the figure's.
func drawStatement(ctx context.Context, d *db.DB, st parser.Statement, file string, o plots.Options) ([]string, error) {
	res, err := query.Eval(ctx, d, st, query.Options{})
	if err != nil {
		return nil, err
	}
	warnings, err := plots.DrawLines(res, file, o)
	return append(res.Warnings, warnings...), err
}

// saveLines draws a query result and reports the file and any warnings.
func (m *Main) saveLines(res *query.Result, file string, o plots.Options) error {
	warnings, err := plots.DrawLines(res, file, o)
	if err != nil {
		return err
	}
	m.wrote(file, warnings)
	return nil
}

// wrote reports a written figure and its warnings.
func (m *Main) wrote(file string, warnings []string) {
	for _, w := range warnings {
		fmt.Fprintln(m.Stderr, "warning:", w)
	}
	fmt.Fprintf(m.Stderr, "wrote %s\n", file)
}

func (m *Main) plot(ctx context.Context, args []string) error {
	fs := m.newFlags("plot [flags] ['QUERY']", `Draw a figure to --out (.png, .svg or .pdf).

  --kind lines (default): a query's values over steps, one series per run,
      layer and statistic. The query is a SELECT, or a PLOT (whose TO names
      the file unless --out is given: a path relative to the working
      directory, without '..' or symbolic links; --out may be any path).
  --kind distortion: GC weighted distortion against K = 1, 2, 4, ... --kmax
      for one snapshot (--run, --step; default the last), with the levels
      D0/K and D0/(2K) below which GC beats SG-B and SG-2B. On a full
      snapshot the partitions are fitted and scored on the training set; on
      a sample they are held out (fit on one half, scored on the other) and
      K stops at N/4.
  --kind norms: histograms of per-example gradient norms at --steps.
  --kind clusters: sizes of the --k clusters at every snapshot.`, `  gvdb plot --out nvar.png "SELECT nvar FROM 'lr-*' GROUP BY run, window(500)"
  gvdb plot "PLOT variance(128), gc_variance(128, 128) FROM 'mlp' TO 'gc.svg'"
  gvdb plot --kind distortion --run mlp --out distortion.png
  gvdb plot --kind norms --run mlp --steps 0,1000,2000 --out norms.png
  gvdb plot --kind clusters --run mlp --k 16 --out clusters.pdf`)
	dir := fs.String("db", db.DefaultDir, "store directory")
	out := fs.String("out", "", "figure file (.png, .svg, .pdf)")
	kind := fs.String("kind", "lines", "figure: lines, distortion, norms or clusters")
	run := fs.String("run", "", "run (distortion, norms, clusters)")
	step := fs.Int64("step", -1, "snapshot step (distortion; default the last)")
	steps := fs.String("steps", "", "snapshot steps, comma-separated (norms; default first and last)")
	k := fs.Int("k", 16, "clusters (clusters)")
	kmax := fs.Int("kmax", 256, "largest K of the distortion curve (distortion; a sample stops at N/4)")
	layer := fs.String("layer", "", "layers, comma-separated (default all)")
	ff := addFigureFlags(fs)
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := m.fileWrites("plot", "a figure"); err != nil {
		return err
	}
	var layers []string
	if *layer != "" {
		layers = strings.Split(*layer, ",")
	}
	d, err := openStore(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if *kind == "lines" {
		if len(rest) == 0 {
			return usagef("plot: give a query (SELECT ... or PLOT ... TO 'file')")
		}
		src := strings.Join(rest, " ")
		st, err := parser.ParseStatement(src)
		if err != nil {
			return err
		}
		o, err := ff.statementOptions(st)
		if err != nil {
			return err
		}
		file := *out
		if p, ok := st.(*parser.Plot); ok && file == "" {
			file, o.InQuery = p.To.Path, true // beneath the working directory
		} else if ok {
			st = p.AsSelect() // --out names the file
		}
		if file == "" {
			return usagef("plot: --out is required for a SELECT")
		}
		warnings, err := drawStatement(ctx, d, st, file, o)
		if err != nil {
			return err
		}
		m.wrote(file, warnings)
		return nil
	}
	if *out == "" {
		return usagef("plot: --out is required")
	}
	if *run == "" {
		return usagef("plot: --kind %s needs --run", *kind)
	}
	r, err := d.Run(*run)
	if err != nil {
		return err
	}
	all, err := d.Steps(r)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return fmt.Errorf("plot: run %q has no snapshots", *run)
	}
	var o plots.Options
	switch *kind {
	case "distortion":
		s := *step
		if s < 0 {
			s = all[len(all)-1]
		}
		curve, err := query.DistortionCurve(d, r, s, layers, *kmax, query.Options{})
		if err != nil {
			return err
		}
		if o, err = ff.options(""); err != nil {
			return err
		}
		if err := plots.DrawDistortion(curve, r.Name, s, *out, o); err != nil {
			return err
		}
		m.wrote(*out, nil)
		return nil
	case "norms":
		want := []int64{all[0], all[len(all)-1]}
		if *steps != "" {
			want = nil
			for _, f := range strings.Split(*steps, ",") {
				v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
				if err != nil {
					return usagef("plot: --steps: %q is not a step", f)
				}
				want = append(want, v)
			}
		}
		var norms []plots.Sample
		for _, s := range want {
			v, err := query.ExampleNorms(d, r, s, layers)
			if err != nil {
				return err
			}
			norms = append(norms, plots.Sample{Label: fmt.Sprintf("step %d", s), Values: v})
		}
		if o, err = ff.options(fmt.Sprintf("%s: per-example gradient norms", *run)); err != nil {
			return err
		}
		p, err := plots.Histogram(norms, o)
		if err != nil {
			return err
		}
		return m.saveFigure(p, *out, o)
	case "clusters":
		if o, err = ff.options(fmt.Sprintf("%s: Gradient Clustering cluster sizes (K = %d, in-sample)", *run, *k)); err != nil {
			return err
		}
		st, sizes, err := query.ClusterSizes(d, r, *k, layers, query.Options{})
		if err != nil {
			return err
		}
		p, err := plots.ClusterSizes(st, sizes, o)
		if err != nil {
			return err
		}
		return m.saveFigure(p, *out, o)
	}
	return usagef("plot: unknown --kind %q (want lines, distortion, norms or clusters)", *kind)
}

func (m *Main) saveFigure(p *plots.Figure, file string, o plots.Options) error {
	if err := plots.Save(p, file, o); err != nil {
		return err
	}
	m.wrote(file, nil)
	return nil
}
