package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"strconv"
)

// maxLine caps one stored record; a longer line is reported as malformed
// (MaxEventSize of canonical data fits many times over, escaping included).
const maxLine = 1 << 20

// Record is one stored event and where it is stored.
type Record struct {
	// Event is the decoded event (zero when the record is malformed).
	Event Event
	// Pos says where the record is: "line 12" in a JSONL file, "entry
	// 12-0" in a Redis stream.
	Pos string
}

// Reader reads a stored audit trail (a JSONL file, a Redis stream) for
// Verify, Query and Lineage.
//
// Records yields the stored records in storage order, which for an
// untampered trail is Seq order, starting at the first record whose Seq is
// at least from (0 reads everything). A record that cannot be decoded is
// yielded with an error that wraps ErrMalformed and has Pos set, and the
// iteration goes on; any other error (the file or Redis cannot be read)
// ends it. Records may be called again to read again.
type Reader interface {
	Records(ctx context.Context, from uint64) iter.Seq2[Record, error]
}

// MalformedError is the error of a record that cannot be decoded.
type MalformedError struct {
	// Pos is where the record is stored.
	Pos string
	// Reason says what is wrong, never quoting the record.
	Reason string
}

// Error implements error.
func (e *MalformedError) Error() string {
	return "audit: malformed record at " + e.Pos + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *MalformedError) Unwrap() error { return ErrMalformed }

// encodeEvent is the stored form of an event: one JSON object (the field
// names of Event's json tags), no newline.
func encodeEvent(e *Event) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encode event %d: %w", e.Seq, err)
	}
	return b, nil
}

// decodeEvent decodes one stored record strictly: unknown fields, trailing
// data and a missing type, prev or hash make it malformed, because a
// verifier must not ignore content the hash does not cover.
func decodeEvent(b []byte) (Event, string) {
	var e Event
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return Event{}, "not a JSON event: " + jsonProblem(err)
	}
	if d.More() {
		return Event{}, "data after the event"
	}
	if _, err := d.Token(); err != io.EOF {
		return Event{}, "data after the event"
	}
	switch {
	case e.Type == "":
		return Event{}, "no type"
	case e.Prev == "" || e.Hash == "":
		return Event{}, "no prev or hash"
	}
	return e, ""
}

// jsonProblem describes a JSON error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + te.Field + " has the wrong type"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated"
	}
	// Unknown fields and time parse errors: their messages name the field
	// or format, not the value, but keep them short.
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// JSONLFile reads a JSONL audit file (what FileSink writes), one event per
// line. It is how `mayfly audit verify --file` and offline verification
// read a copy of the trail.
type JSONLFile struct {
	// Path is the file.
	Path string
}

// Records implements Reader.
func (f JSONLFile) Records(ctx context.Context, from uint64) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		fh, err := os.Open(f.Path)
		if err != nil {
			yield(Record{}, fmt.Errorf("audit: %w", err))
			return
		}
		defer fh.Close()
		readJSONL(ctx, fh, from, yield)
	}
}

// last returns the last event of the file, reading it from the end.
func (f JSONLFile) last(context.Context) (Event, bool, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Event{}, false, nil
		}
		return Event{}, false, fmt.Errorf("audit: %w", err)
	}
	defer fh.Close()
	line, err := lastLine(fh)
	if err != nil || line == nil {
		return Event{}, false, err
	}
	e, problem := decodeEvent(line)
	if problem != "" {
		return Event{}, false, fmt.Errorf("audit: last line of %s: %s", f.Path, problem)
	}
	return e, true, nil
}

// lastLine returns the last non-empty line of f (without its newline), or
// nil for an empty file.
func lastLine(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	end := st.Size()
	var buf []byte
	const chunk = 64 << 10
	for end > 0 && int64(len(buf)) <= maxLine {
		n := min(int64(chunk), end)
		b := make([]byte, n)
		if _, err := f.ReadAt(b, end-n); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		end -= n
		buf = append(b, buf...)
		trimmed := bytes.TrimRight(buf, "\n")
		if len(trimmed) == 0 {
			continue
		}
		if i := bytes.LastIndexByte(trimmed, '\n'); i >= 0 {
			return trimmed[i+1:], nil
		}
		if end == 0 {
			return trimmed, nil
		}
	}
	if len(bytes.TrimRight(buf, "\n")) == 0 {
		return nil, nil
	}
	return nil, fmt.Errorf("audit: last line longer than %d bytes", maxLine)
}

// JSONLBytes reads a JSONL audit trail held in memory (an export, a
// download from a SIEM, a fuzz input).
type JSONLBytes []byte

// Records implements Reader.
func (b JSONLBytes) Records(ctx context.Context, from uint64) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		readJSONL(ctx, bytes.NewReader(b), from, yield)
	}
}

// readJSONL yields the records of a JSONL stream.
func readJSONL(ctx context.Context, r io.Reader, from uint64, yield func(Record, error) bool) {
	br := bufio.NewReaderSize(r, 64<<10)
	started := from <= 1
	for n := 1; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			yield(Record{}, fmt.Errorf("audit: %w", ctx.Err()))
			return
		}
		line, complete, tooLong, err := readLine(br)
		if err != nil && err != io.EOF {
			yield(Record{}, fmt.Errorf("audit: read: %w", err))
			return
		}
		if err == io.EOF && len(line) == 0 && !tooLong {
			return
		}
		pos := "line " + strconv.Itoa(n)
		var problem string
		var e Event
		switch {
		case tooLong:
			problem = "longer than " + strconv.Itoa(maxLine) + " bytes"
		case len(line) == 0:
			problem = "empty line"
		default:
			e, problem = decodeEvent(line)
			if problem != "" && !complete {
				problem = "incomplete last line (" + problem + ")"
			}
		}
		if problem == "" && !started {
			started = e.Seq >= from
		}
		if started {
			if problem != "" {
				if !yield(Record{Pos: pos}, &MalformedError{Pos: pos, Reason: problem}) {
					return
				}
			} else if !yield(Record{Event: e, Pos: pos}, nil) {
				return
			}
		}
		if err == io.EOF {
			return
		}
	}
}

// readLine reads one line without its newline. complete is false when the
// stream ended without a newline; tooLong when the line passed maxLine
// (the rest of it is skipped). err is io.EOF after the last line.
func readLine(br *bufio.Reader) (line []byte, complete, tooLong bool, err error) {
	for {
		frag, e := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > maxLine+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		switch {
		case e == nil:
			if !tooLong {
				line = line[:len(line)-1]
			}
			return line, true, tooLong, nil
		case e == bufio.ErrBufferFull:
			continue
		default:
			return line, false, tooLong, e
		}
	}
}
