package cron

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	robfig "github.com/robfig/cron/v3"
)

// ErrExpression is wrapped by every expression parsing error.
var ErrExpression = errors.New("cron: invalid expression")

// parser reads 5-field (minute first) and 6-field (seconds first) specs and
// descriptors; parseSchedule adds the 7-field (+year) form and the time
// zone handling around it.
var parser = robfig.NewParser(robfig.SecondOptional | robfig.Minute | robfig.Hour |
	robfig.Dom | robfig.Month | robfig.Dow | robfig.Descriptor)

// Year bounds of the 7th field.
const (
	minYear = 1970
	maxYear = 2199
)

// schedule is a parsed expression.
type schedule struct {
	robfig.Schedule
	// canonical is the expression with runs of white space collapsed, used
	// to identify a job across engines.
	canonical string
}

// parseSchedule parses a cron expression:
//
//	"sec min hour dom month dow"        6 fields, seconds first (as iii)
//	"sec min hour dom month dow year"   7 fields (as iii)
//	"min hour dom month dow"            plain 5-field cron (seconds = 0)
//	"@every 5s", "@hourly", "@daily"... descriptors
//
// An optional "CRON_TZ=<zone> " (or "TZ=") prefix selects a time zone;
// without it schedules are evaluated in UTC. @every schedules are aligned
// to the Unix epoch, so every engine computes the same firing times.
func parseSchedule(expr string) (sched *schedule, err error) {
	fail := func(format string, args ...any) (*schedule, error) {
		return nil, fmt.Errorf("%w %q: %s", ErrExpression, expr, fmt.Sprintf(format, args...))
	}
	spec := strings.TrimSpace(expr)
	if spec == "" {
		return fail("empty expression")
	}
	loc, zone := time.UTC, "UTC"
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		eq := strings.IndexByte(spec, '=')
		end := strings.IndexAny(spec, " \t")
		if end < 0 {
			return fail("time zone prefix without a schedule")
		}
		zone = spec[eq+1 : end]
		if loc, err = time.LoadLocation(zone); err != nil {
			return fail("unknown time zone %q", zone)
		}
		spec = strings.TrimSpace(spec[end:])
	}
	defer func() {
		// The parser has panicked on odd input before; never take the
		// engine down for a worker's expression.
		if r := recover(); r != nil {
			sched, err = fail("%v", r)
		}
	}()
	if strings.HasPrefix(spec, "@") {
		return parseDescriptor(expr, spec, zone)
	}
	fields := strings.Fields(spec)
	canonical := strings.Join(fields, " ")
	var (
		years    []yearRange
		yearText string
	)
	switch len(fields) {
	case 5, 6:
	case 7:
		yearText = fields[6]
		if years, err = parseYears(yearText); err != nil {
			return fail("year field %q: %v", fields[6], err)
		}
		fields = fields[:6]
	default:
		return fail("found %d fields; want 6 (sec min hour day-of-month month day-of-week), 7 (the same plus year) or 5 (min hour day-of-month month day-of-week)", len(fields))
	}
	s, err := parser.Parse("CRON_TZ=" + zone + " " + strings.Join(fields, " "))
	if err != nil {
		return fail("%v", err)
	}
	if zone != "UTC" {
		canonical = "CRON_TZ=" + zone + " " + canonical
	}
	out := &schedule{Schedule: s, canonical: canonical}
	if years != nil {
		out.Schedule = &yearSchedule{inner: s, years: years, loc: loc}
		if out.Next(time.Now()).IsZero() {
			return fail("it never fires again (year field %q)", yearText)
		}
	}
	return out, nil
}

func parseDescriptor(expr, spec, zone string) (*schedule, error) {
	const every = "@every "
	if strings.HasPrefix(spec, every) {
		d, err := time.ParseDuration(strings.TrimSpace(spec[len(every):]))
		if err != nil {
			return nil, fmt.Errorf("%w %q: @every: %v", ErrExpression, expr, err)
		}
		if d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("%w %q: @every needs a whole number of seconds, at least 1s", ErrExpression, expr)
		}
		return &schedule{Schedule: alignedEvery{d}, canonical: "@every " + d.String()}, nil
	}
	s, err := parser.Parse("CRON_TZ=" + zone + " " + spec)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v (descriptors: @yearly, @monthly, @weekly, @daily, @hourly, @every <duration>)", ErrExpression, expr, err)
	}
	canonical := spec
	if zone != "UTC" {
		canonical = "CRON_TZ=" + zone + " " + spec
	}
	return &schedule{Schedule: s, canonical: canonical}, nil
}

// alignedEvery fires at every multiple of d since the Unix epoch, so that
// engines started at different times agree on the firing times.
type alignedEvery struct{ d time.Duration }

func (a alignedEvery) Next(t time.Time) time.Time {
	n := t.UnixNano()/int64(a.d) + 1
	return time.Unix(0, n*int64(a.d)).UTC()
}

// yearRange is one item of the year field: from-to every step years.
type yearRange struct{ from, to, step int }

func (r yearRange) has(y int) bool {
	return y >= r.from && y <= r.to && (y-r.from)%r.step == 0
}

// parseYears reads a year field: *, ?, N, N-M, with an optional /step, in
// a comma-separated list.
func parseYears(f string) ([]yearRange, error) {
	var out []yearRange
	for item := range strings.SplitSeq(f, ",") {
		r := yearRange{from: minYear, to: maxYear, step: 1}
		base, stepText, hasStep := strings.Cut(item, "/")
		if hasStep {
			step, err := strconv.Atoi(stepText)
			if err != nil || step < 1 {
				return nil, fmt.Errorf("bad step %q", stepText)
			}
			r.step = step
		}
		switch {
		case base == "*" || base == "?":
		case strings.Contains(base, "-"):
			lo, hi, _ := strings.Cut(base, "-")
			var err1, err2 error
			r.from, err1 = strconv.Atoi(lo)
			r.to, err2 = strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad range %q", base)
			}
		default:
			y, err := strconv.Atoi(base)
			if err != nil {
				return nil, fmt.Errorf("bad year %q", base)
			}
			r.from = y
			if !hasStep {
				r.to = y
			}
		}
		if r.from < minYear || r.to > maxYear || r.from > r.to {
			return nil, fmt.Errorf("years must be within %d-%d, got %q", minYear, maxYear, item)
		}
		out = append(out, r)
	}
	return out, nil
}

// yearSchedule restricts a schedule to the years of a 7th field.
type yearSchedule struct {
	inner robfig.Schedule
	years []yearRange
	loc   *time.Location
}

func (s *yearSchedule) has(y int) bool {
	for _, r := range s.years {
		if r.has(y) {
			return true
		}
	}
	return false
}

func (s *yearSchedule) Next(t time.Time) time.Time {
	for range maxYear - minYear + 1 {
		n := s.inner.Next(t)
		if n.IsZero() || n.Year() > maxYear {
			return time.Time{}
		}
		if s.has(n.Year()) {
			return n
		}
		y := n.Year() + 1
		for y <= maxYear && !s.has(y) {
			y++
		}
		if y > maxYear {
			return time.Time{}
		}
		// Just before the first instant of year y, so that it is a candidate.
		t = time.Date(y, 1, 1, 0, 0, 0, 0, s.loc).Add(-time.Nanosecond)
	}
	return time.Time{}
}
