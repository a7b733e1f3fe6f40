package proxy

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/fragment"
	"fragcache/metrics"
)

var (
	_ encoding.BinaryAppender    = (*fragRecord)(nil)
	_ encoding.BinaryUnmarshaler = (*fragRecord)(nil)
)

const userScope = scopeUser + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// esiRecord returns a record whose body holds ESI, with its template.
func esiRecord(t testing.TB) *fragRecord {
	t.Helper()
	body := []byte(`<p>cart</p><esi:include src="/frag/price"/>`)
	tpl, err := fragment.Parse(body, fragment.Limits{})
	if err != nil || !tpl.HasESI() {
		t.Fatalf("Parse: %v", err)
	}
	at := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	return &fragRecord{body: body, contentType: "text/html", fresh: at, stale: at.Add(time.Minute),
		stored: at.Add(-time.Second), serveScope: scopeShared, esi: true, tpl: tpl}
}

func recordCases(t testing.TB) []struct {
	name string
	r    *fragRecord
} {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	return []struct {
		name string
		r    *fragRecord
	}{
		{"shared", &fragRecord{body: []byte("<p>news</p>"), contentType: "text/html; charset=utf-8",
			fresh: at, stale: at.Add(10 * time.Minute), stored: at.Add(-time.Minute), serveScope: scopeShared}},
		{"user scope with tags", &fragRecord{body: []byte("<p>hello ada</p>"), contentType: "text/html",
			fresh: at, stale: at, stored: at, tags: []string{"user-box", strings.Repeat("t", maxRecordTag)},
			serveScope: userScope, private: true}},
		{"unstored anonymous", &fragRecord{body: []byte("x"), fresh: at.Add(-time.Second), stale: at,
			stored: at, serveScope: scopeAnon, unstored: true}},
		{"empty body, zero times", &fragRecord{body: []byte{}, serveScope: scopeShared}},
		{"before 1970", &fragRecord{body: []byte("old"), fresh: time.Unix(-5, 0), stale: time.Unix(-1, 0),
			stored: time.Unix(-9, 0), serveScope: scopeShared}},
		{"max tags", &fragRecord{body: []byte("t"), fresh: at, stale: at, stored: at, serveScope: scopeShared,
			tags: slices.Repeat([]string{"tag"}, maxRecordTags)}},
		{"esi", esiRecord(t)},
	}
}

// recordDiff describes how got differs from want, or returns "".
func recordDiff(got, want *fragRecord) string {
	var d []string
	if !bytes.Equal(got.body, want.body) {
		d = append(d, fmt.Sprintf("body %q, want %q", got.body, want.body))
	}
	if got.contentType != want.contentType {
		d = append(d, fmt.Sprintf("content type %q, want %q", got.contentType, want.contentType))
	}
	for _, tm := range []struct {
		name      string
		got, want time.Time
	}{{"fresh", got.fresh, want.fresh}, {"stale", got.stale, want.stale}, {"stored", got.stored, want.stored}} {
		if !tm.got.Equal(tm.want) || tm.got.IsZero() != tm.want.IsZero() {
			d = append(d, fmt.Sprintf("%s %v, want %v", tm.name, tm.got, tm.want))
		}
	}
	if !slices.Equal(got.tags, want.tags) {
		d = append(d, fmt.Sprintf("tags %q, want %q", got.tags, want.tags))
	}
	if got.serveScope != want.serveScope || got.private != want.private || got.unstored != want.unstored || got.esi != want.esi {
		d = append(d, fmt.Sprintf("scope %q private %v unstored %v esi %v, want %q %v %v %v",
			got.serveScope, got.private, got.unstored, got.esi, want.serveScope, want.private, want.unstored, want.esi))
	}
	if (got.tpl == nil) != (want.tpl == nil) {
		d = append(d, fmt.Sprintf("template %v, want %v", got.tpl != nil, want.tpl != nil))
	} else if got.tpl != nil {
		if g, w := renderSrcs(got.tpl), renderSrcs(want.tpl); g != w {
			d = append(d, fmt.Sprintf("template renders %q, want %q", g, w))
		}
	}
	return strings.Join(d, "; ")
}

// renderSrcs renders tpl for a request without variables, each include as
// its src in brackets.
func renderSrcs(tpl *fragment.Template) string {
	var e fragment.Eval
	tpl.Evaluate(noVars{}, &e)
	return string(tpl.Render(nil, &e, srcResolver{}))
}

type noVars struct{}

func (noVars) Host() string                 { return "" }
func (noVars) Referer() string              { return "" }
func (noVars) Cookie(string) (string, bool) { return "", false }
func (noVars) RawQuery() string             { return "" }
func (noVars) AcceptLanguage() string       { return "" }
func (noVars) UserAgent() string            { return "" }

type srcResolver struct{}

func (srcResolver) AppendInclude(dst []byte, _ *fragment.Eval, inc *fragment.Include) ([]byte, bool) {
	return append(dst, "["+inc.Src+"]"...), false
}

func TestRecordRoundTrip(t *testing.T) {
	for _, tc := range recordCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("prefix")
			b, err := tc.r.AppendBinary(bytes.Clone(prefix))
			if err != nil {
				t.Fatalf("AppendBinary: %v", err)
			}
			if !bytes.HasPrefix(b, prefix) {
				t.Fatalf("AppendBinary dropped what b held: %q", b)
			}
			enc := b[len(prefix):]
			var got fragRecord
			if err := got.UnmarshalBinary(enc); err != nil {
				t.Fatalf("UnmarshalBinary(%x): %v", enc, err)
			}
			if d := recordDiff(&got, tc.r); d != "" {
				t.Fatalf("decoded record differs: %s", d)
			}
			if len(got.body) > 0 && &got.body[0] == &enc[len(enc)-len(got.body)] {
				t.Fatalf("decoded body aliases the input")
			}
			again, err := got.AppendBinary(nil)
			if err != nil || !bytes.Equal(again, enc) {
				t.Fatalf("re-encoded: %x, %v; want %x", again, err, enc)
			}
		})
	}
}

// TestRecordLayout pins format version 1 byte for byte: a change of the
// layout must come with a new version.
func TestRecordLayout(t *testing.T) {
	r := &fragRecord{body: []byte("hi"), contentType: "text/html", fresh: time.Unix(0, 1), stale: time.Unix(0, 2),
		stored: time.Unix(0, 3), tags: []string{"ab"}, serveScope: scopeAnon, unstored: true}
	got, err := r.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "01" + "02" + // version, flags: unstored
		"0000000000000001" + "0000000000000002" + "0000000000000003" + // fresh, stale, stored
		"01" + "61" + // serve scope "a"
		"0009" + hex.EncodeToString([]byte("text/html")) +
		"01" + "02" + "6162" + // one tag, "ab"
		"00000002" + "6869" // body "hi"
	if hex.EncodeToString(got) != want {
		t.Fatalf("encoding = %x\nwant       %s", got, want)
	}
}

func TestRecordDecodeRejects(t *testing.T) {
	valid, err := recordCases(t)[1].r.AppendBinary(nil) // the user-scope record with tags
	if err != nil {
		t.Fatal(err)
	}
	esi := esiRecord(t)
	noESI := *esi
	noESI.body = []byte("<p>no directives</p>")
	noESI.tpl = nil
	noESIEnc := mustEncodeUnchecked(t, &noESI)

	// at returns valid with b written at offset off.
	at := func(off int, b ...byte) []byte {
		v := bytes.Clone(valid)
		copy(v[off:], b)
		return v
	}
	scopeOff := recordFixed
	ctOff := scopeOff + 1 + len(userScope)
	tagsOff := ctOff + 2 + len("text/html")
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"unknown version", at(0, 2), "format version 2"},
		{"version zero", at(0, 0), "format version 0"},
		{"unknown flag", at(1, 0x09), "unknown flags 0x8"},
		{"trailing byte", append(bytes.Clone(valid), 0), "1 bytes after the body"},
		{"body length over the input", append(bytes.Clone(valid[:len(valid)-len("<p>hello ada</p>")-4]), 0xff, 0xff, 0xff, 0xff, 'x'), "truncated"},
		{"content type over the limit", at(ctOff, 0x04, 0x01), "content type of 1025 bytes"},
		{"too many tags", at(tagsOff, maxRecordTags+1), "65 tags"},
		{"empty tag", at(tagsOff+1, 0), "tag of 0 bytes"},
		{"tag over the limit", at(tagsOff+1, maxRecordTag+1), "tag of 129 bytes"},
		{"empty serve scope", encodeScope(t, valid, ""), "serve scope of 0 bytes"},
		{"private flag on the shared scope", encodeScope(t, valid, scopeShared), "private is true"},
		{"user scope without the private flag", at(1, 0), "private is false"},
		{"stale before fresh", at(2+8, 0x00), "before fresh until"},
		{"esi flag on a body without ESI", noESIEnc, "esi flag on a body without ESI"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r fragRecord
			err := r.UnmarshalBinary(tc.in)
			if err == nil || !errors.Is(err, errBadRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("UnmarshalBinary(%x) = %v, want an error saying %q", tc.in, err, tc.want)
			}
			if d := recordDiff(&r, &fragRecord{}); d != "" || r.body != nil {
				t.Fatalf("a refused decode changed the record: %s", d)
			}
		})
	}
	t.Run("every truncation", func(t *testing.T) {
		for n := range len(valid) {
			var r fragRecord
			if err := r.UnmarshalBinary(valid[:n]); err == nil || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("UnmarshalBinary of the first %d of %d bytes = %v, want truncated", n, len(valid), err)
			}
		}
	})
}

// encodeScope returns the encoding valid (a user-scope record) with its
// serve scope replaced by scope.
func encodeScope(t *testing.T, valid []byte, scope string) []byte {
	t.Helper()
	n := int(valid[recordFixed])
	out := append(bytes.Clone(valid[:recordFixed]), byte(len(scope)))
	out = append(out, scope...)
	return append(out, valid[recordFixed+1+n:]...)
}

// mustEncodeUnchecked encodes r as AppendBinary would, without its checks,
// to build inputs the decoder must refuse.
func mustEncodeUnchecked(t *testing.T, r *fragRecord) []byte {
	t.Helper()
	tpl, esi := r.tpl, r.esi
	r.esi = false
	b, err := r.AppendBinary(nil)
	r.tpl, r.esi = tpl, esi
	if err != nil {
		t.Fatal(err)
	}
	if esi {
		b[1] |= flagESI
	}
	return b
}

func TestRecordEncodeRejects(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	ok := func() *fragRecord {
		return &fragRecord{body: []byte("b"), fresh: at, stale: at, stored: at, serveScope: scopeShared}
	}
	tests := []struct {
		name   string
		change func(r *fragRecord)
		want   string
	}{
		{"after 2262", func(r *fragRecord) { r.stale = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }, "cannot be encoded"},
		{"before 1678", func(r *fragRecord) {
			r.stored = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)
		}, "cannot be encoded"},
		{"the Unix epoch", func(r *fragRecord) { r.stored = time.Unix(0, 0) }, "cannot be encoded"},
		{"no serve scope", func(r *fragRecord) { r.serveScope = "" }, "serve scope of 0 bytes"},
		{"serve scope over 255 bytes", func(r *fragRecord) {
			r.serveScope, r.private = scopeUser+strings.Repeat("f", 255), true
		}, "serve scope of 256 bytes"},
		{"private in the shared scope", func(r *fragRecord) { r.private = true }, "private is true"},
		{"content type over the limit", func(r *fragRecord) { r.contentType = strings.Repeat("c", maxRecordContentType+1) }, "content type"},
		{"too many tags", func(r *fragRecord) { r.tags = slices.Repeat([]string{"t"}, maxRecordTags+1) }, "65 tags"},
		{"empty tag", func(r *fragRecord) { r.tags = []string{""} }, "tag of 0 bytes"},
		{"stale before fresh", func(r *fragRecord) { r.stale = r.fresh.Add(-time.Nanosecond) }, "before fresh until"},
		{"esi without a template", func(r *fragRecord) { r.esi = true }, "esi is true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok()
			if _, err := r.AppendBinary(nil); err != nil {
				t.Fatalf("the unchanged record: %v", err)
			}
			tc.change(r)
			b, err := r.AppendBinary([]byte("kept"))
			if err == nil || !errors.Is(err, errBadRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AppendBinary = %v, want an error saying %q", err, tc.want)
			}
			if string(b) != "kept" {
				t.Fatalf("a refused AppendBinary returned %q, want b unchanged", b)
			}
		})
	}
}

// FuzzRecordRoundTrip checks the record encoding both ways: decoding
// arbitrary bytes never panics, and what it accepts encodes back to the
// same bytes; a record built from the other inputs, when the encoding
// accepts it, decodes back to itself.
func FuzzRecordRoundTrip(f *testing.F) {
	for _, tc := range recordCases(f) {
		enc, err := tc.r.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		var flags uint8
		if tc.r.unstored {
			flags |= flagUnstored
		}
		if tc.r.esi {
			flags |= flagESI
		}
		f.Add(enc, tc.r.body, tc.r.serveScope, tc.r.contentType, strings.Join(tc.r.tags, " "),
			nanos(tc.r.fresh), int64(tc.r.stale.Sub(tc.r.fresh)), nanos(tc.r.stored), flags)
	}
	f.Add([]byte{recordVersion}, []byte(`<esi:include src="/x"/>`), userScope, "", "a b", int64(1), int64(0), int64(-1), uint8(flagESI))
	f.Add(make([]byte, recordFixed+8), []byte(nil), "", "text/html", "", int64(0), int64(-1), int64(0), uint8(0xff))
	f.Fuzz(func(t *testing.T, data, body []byte, scope, ct, tags string, fresh, staleAfter, stored int64, flags uint8) {
		var r fragRecord
		if err := r.UnmarshalBinary(data); err == nil {
			again, err := r.AppendBinary(nil)
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("accepted %x, re-encoded as %x (%v)", data, again, err)
			}
		} else if !errors.Is(err, errBadRecord) {
			t.Fatalf("UnmarshalBinary error %v does not wrap errBadRecord", err)
		}

		in := &fragRecord{
			body:        body,
			contentType: ct,
			fresh:       fromNanos(fresh),
			stored:      fromNanos(stored),
			serveScope:  scope,
			private:     isUserScope(scope),
			unstored:    flags&flagUnstored != 0,
		}
		in.stale = in.fresh.Add(time.Duration(staleAfter))
		if tags != "" {
			in.tags = strings.Split(tags, " ")
		}
		if flags&flagESI != 0 {
			if tpl, _ := fragment.Parse(body, fragment.Limits{}); tpl != nil && tpl.HasESI() {
				in.esi, in.tpl = true, tpl
			}
		}
		enc, err := in.AppendBinary(nil)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("AppendBinary error %v does not wrap errBadRecord", err)
			}
			return
		}
		var out fragRecord
		if err := out.UnmarshalBinary(enc); err != nil {
			t.Fatalf("UnmarshalBinary(AppendBinary(r)) = %v for %x", err, enc)
		}
		if d := recordDiff(&out, in); d != "" {
			t.Fatalf("decode(encode(r)) differs: %s", d)
		}
	})
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// TestRecordDecodeAllocationBounded: a short input that claims a huge
// body is refused before anything of that size is allocated.
func TestRecordDecodeAllocationBounded(t *testing.T) {
	valid, err := recordCases(t)[0].r.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	body := len("<p>news</p>")
	huge := binary.BigEndian.AppendUint32(bytes.Clone(valid[:len(valid)-body-4]), 1<<31)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		var r fragRecord
		if r.UnmarshalBinary(huge) == nil {
			t.Fatal("a 2 GiB body in a short input was accepted")
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("refusing a huge length ten times allocated %d bytes", n)
	}
}

// TestFetchedRecordEncodes: the records the fetcher builds from answers
// are ones the encoding carries, and decode to themselves.
func TestFetchedRecordEncodes(t *testing.T) {
	p := newTestProxy(t)
	tests := []struct {
		name    string
		headers map[string]string
		body    string
		scope   string
		want    fragRecord // the flags and scope
	}{
		{"shared ESI fragment", map[string]string{"Cache-Control": "public, max-age=60", "Surrogate-Control": `content="ESI/1.0"`},
			`<p>a</p><esi:include src="/b"/>`, scopeAnon, fragRecord{serveScope: scopeShared, esi: true}},
		{"private answer to a user", map[string]string{"Cache-Control": "private, max-age=60"},
			`<p>mine</p>`, userScope, fragRecord{serveScope: userScope, private: true}},
		{"Set-Cookie", map[string]string{"Set-Cookie": "a=b", "Cache-Control": "max-age=60"},
			`<p>x</p>`, scopeAnon, fragRecord{serveScope: scopeAnon, unstored: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.ResponseHeader
			h.SetContentType("text/html; charset=utf-8")
			for k, v := range tc.headers {
				h.Set(k, v)
			}
			a := &loadArg{t: target{url: "http://app:8080/f", upstream: true}, keyURL: "http://app:8080/f",
				frag: p.m.Fragment(metrics.OtherFragment), scope: tc.scope, esiParsed: true}
			start := time.Now()
			e := p.fetch.entry(fragmentKey(tc.scope, a.keyURL, ""), a, &h, []byte(tc.body), p.live.Load(), start)
			r := e.Value
			if r.serveScope != tc.want.serveScope || r.private != tc.want.private || r.unstored != tc.want.unstored || r.esi != tc.want.esi {
				t.Fatalf("record scope %q private %v unstored %v esi %v, want %q %v %v %v", r.serveScope, r.private,
					r.unstored, r.esi, tc.want.serveScope, tc.want.private, tc.want.unstored, tc.want.esi)
			}
			if !r.stored.Equal(start) || !r.stale.Equal(r.fresh.Add(p.cfg.StaleTTL)) || r.contentType != "text/html; charset=utf-8" {
				t.Fatalf("record stored %v stale %v fresh %v type %q; want stored at the fetch's start, stale after fresh by --stale-ttl",
					r.stored, r.stale, r.fresh, r.contentType)
			}
			enc, err := r.AppendBinary(nil)
			if err != nil {
				t.Fatalf("AppendBinary: %v", err)
			}
			var got fragRecord
			if err := got.UnmarshalBinary(enc); err != nil {
				t.Fatalf("UnmarshalBinary: %v", err)
			}
			if d := recordDiff(&got, r); d != "" {
				t.Fatalf("decoded record differs: %s", d)
			}
		})
	}
}
