package proxy

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"errors"
	"fmt"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/valyala/fasthttp"
)

// errTooLarge is returned when a decoded body passes its cap.
var errTooLarge = errors.New("body larger than its cap")

// errUnknownEncoding is returned for a Content-Encoding fragcache cannot
// decode.
var errUnknownEncoding = errors.New("unsupported content encoding")

// decodeBody appends the decoded form of body to dst, refusing to produce
// more than limit bytes: a small compressed body cannot expand into
// memory beyond the cap (a decompression bomb is cut at limit+1 bytes).
func decodeBody(dst, body []byte, encoding []byte, limit int64) ([]byte, error) {
	var r io.Reader
	switch {
	case len(encoding) == 0 || equalFold(encoding, "identity"):
		if int64(len(body)) > limit {
			return dst, errTooLarge
		}
		return append(dst, body...), nil
	case equalFold(encoding, "gzip") || equalFold(encoding, "x-gzip"):
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return dst, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	case equalFold(encoding, "deflate"):
		// HTTP's deflate is zlib-wrapped; some servers send raw deflate.
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			fr := flate.NewReader(bytes.NewReader(body))
			defer fr.Close()
			r = fr
		} else {
			defer zr.Close()
			r = zr
		}
	case equalFold(encoding, "br"):
		r = brotli.NewReader(bytes.NewReader(body))
	default:
		return dst, errUnknownEncoding
	}
	buf := bytes.NewBuffer(dst)
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return buf.Bytes(), fmt.Errorf("decoding %s: %w", encoding, err)
	}
	if n > limit {
		return buf.Bytes(), errTooLarge
	}
	return buf.Bytes(), nil
}

// pickEncoding chooses how a composed page goes out when its upstream
// page was encoded: br or gzip if the client accepts them, else identity.
func pickEncoding(acceptEncoding []byte) string {
	br, gz := false, false
	forEachToken(acceptEncoding, func(tok []byte, q bool) {
		if !q {
			return
		}
		switch {
		case equalFold(tok, "br"):
			br = true
		case equalFold(tok, "gzip"):
			gz = true
		}
	})
	switch {
	case br:
		return "br"
	case gz:
		return "gzip"
	}
	return ""
}

// encodeBody appends body encoded with enc ("br" or "gzip") to dst.
func encodeBody(dst, body []byte, enc string) []byte {
	switch enc {
	case "br":
		return fasthttp.AppendBrotliBytesLevel(dst, body, fasthttp.CompressBrotliDefaultCompression)
	case "gzip":
		return fasthttp.AppendGzipBytesLevel(dst, body, fasthttp.CompressDefaultCompression)
	}
	return append(dst, body...)
}

// decodableEncodings filters a client's Accept-Encoding to the codings
// fragcache can decode, so an opted-in page never arrives in a coding
// that cannot be composed. It appends the result to dst.
func decodableEncodings(dst, acceptEncoding []byte) []byte {
	forEachToken(acceptEncoding, func(tok []byte, q bool) {
		if !q {
			return
		}
		if equalFold(tok, "gzip") || equalFold(tok, "br") || equalFold(tok, "deflate") {
			if len(dst) > 0 {
				dst = append(dst, ", "...)
			}
			dst = append(dst, tok...)
		}
	})
	return dst
}

// forEachToken calls fn for every coding of an Accept-Encoding-style list
// with whether its q value allows it (q=0 forbids).
func forEachToken(list []byte, fn func(tok []byte, allowed bool)) {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		tok := item
		params := []byte(nil)
		if i := bytes.IndexByte(item, ';'); i >= 0 {
			tok, params = item[:i], item[i+1:]
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 {
			continue
		}
		allowed := true
		p := bytes.TrimSpace(params)
		if len(p) >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=' {
			v := bytes.TrimSpace(p[2:])
			allowed = false
			for _, c := range v {
				if c >= '1' && c <= '9' {
					allowed = true
					break
				}
			}
		}
		fn(tok, allowed)
	}
}

// equalFold reports whether b equals s, ASCII case-insensitively.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
