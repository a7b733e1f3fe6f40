package fragment

import (
	"fmt"
	"strings"
)

// fakeResolver resolves includes the way fragcache's pending-versus-failed
// rule does: a known src renders its body; a failed one renders its alt if
// that is known, else nothing with onerror="continue", else its
// placeholder, and then counts as failed; anything else is pending and
// renders its placeholder.
type fakeResolver struct {
	bodies map[string]string
	failed map[string]bool
	seen   []string
}

func (r *fakeResolver) AppendInclude(dst []byte, e *Eval, inc *Include) ([]byte, bool) {
	r.seen = append(r.seen, inc.Src)
	if inc.Err == nil && !r.failed[inc.Src] {
		if b, ok := r.bodies[inc.Src]; ok {
			return append(dst, b...), false
		}
		return e.AppendPlaceholder(dst, inc), false
	}
	if inc.Alt != "" && inc.AltErr == nil {
		if b, ok := r.bodies[inc.Alt]; ok {
			return append(dst, b...), false
		}
	}
	if inc.Continue {
		return dst, false
	}
	return e.AppendPlaceholder(dst, inc), true
}

// describe renders an include's fields compactly for comparisons.
func describe(inc Include) string {
	var b strings.Builder
	b.WriteString(inc.Src)
	if inc.Alt != "" {
		fmt.Fprintf(&b, " alt=%s", inc.Alt)
	}
	if inc.Continue {
		b.WriteString(" continue")
	}
	if inc.HasTimeout {
		fmt.Fprintf(&b, " timeout=%s", inc.Timeout)
	}
	if inc.HasTTL {
		fmt.Fprintf(&b, " ttl=%s", inc.TTL)
	}
	if inc.InAttempt {
		b.WriteString(" attempt")
	}
	if inc.Deferred {
		b.WriteString(" deferred")
	}
	if inc.Err != nil {
		fmt.Fprintf(&b, " err=%q", inc.Err)
	}
	if inc.AltErr != nil {
		fmt.Fprintf(&b, " alterr=%q", inc.AltErr)
	}
	return b.String()
}

func describeAll(incs []Include) []string {
	out := make([]string, 0, len(incs))
	for _, inc := range incs {
		out = append(out, describe(inc))
	}
	return out
}

// rawRebuild lays the template's pieces end to end.
func rawRebuild(t *Template) []byte {
	var b []byte
	t.walkRaw(func(_ opKind, raw []byte) { b = append(b, raw...) })
	return b
}
