package basebackup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/pierrec/lz4/v4"
	"go.uber.org/zap"

	"github.com/wayback-pitr/wayback/pgcopy"
	"github.com/wayback-pitr/wayback/store"
	"github.com/wayback-pitr/wayback/wal"
)

// ReadRows calls fn with every row of table t in backup m, values in the
// order of t.Columns, as text (the same text the change stream carries).
// Each file is read from the first store with a valid copy; if a copy
// fails verification part-way, the next store's copy is read from the
// start, so fn may see rows again and must be idempotent.
func ReadRows(ctx context.Context, stores []store.Store, t Table, log *zap.Logger, fn func(row wal.Tuple) error) error {
	if log == nil {
		log = zap.NewNop()
	}
	// A type this version cannot print is the manifest's doing, not a
	// store's: say so before reading anything, instead of trying every
	// store's copy and blaming them all.
	if t.CopyFormat() == FormatBinary {
		for i, oid := range t.ColumnTypes {
			if !pgcopy.Supported(oid) {
				col := fmt.Sprint(i + 1)
				if i < len(t.Columns) {
					col = t.Columns[i]
				}
				return fmt.Errorf("read table %s.%s: column %s is stored in binary as type OID %d, which this version of wayback cannot read: run a wayback at least as new as the one that took the backup", t.Schema, t.Name, col, oid)
			}
		}
	}
	for _, f := range t.Files {
		var errs []error
		ok := false
		for _, s := range stores {
			err := readRowsFrom(ctx, s, t, f, fn)
			if err == nil {
				ok = true
				break
			}
			var se sourceError
			if !errors.As(err, &se) {
				return err
			}
			log.Warn("backup object unusable in this store, trying the next", zap.String("key", f.Key), zap.String("store", s.URL()), zap.Error(err))
			errs = append(errs, err)
		}
		if !ok {
			return fmt.Errorf("read table %s.%s: no store has a valid copy of %s: %w", t.Schema, t.Name, f.Key, errors.Join(errs...))
		}
	}
	return nil
}

func readRowsFrom(ctx context.Context, s store.Store, t Table, f FileRef, fn func(wal.Tuple) error) error {
	rc, err := s.Get(ctx, f.Key)
	if err != nil {
		return sourceError{err}
	}
	defer rc.Close()
	hr := newHashReader(rc, f, s.URL())
	br := bufio.NewReaderSize(lz4.NewReader(hr), 1<<20)
	if t.CopyFormat() == FormatBinary {
		err = readBinaryRows(br, t, fn)
	} else {
		err = readTextRows(br, fn)
	}
	if err != nil {
		return err
	}
	if err := hr.verify(); err != nil {
		return sourceError{err}
	}
	return nil
}

func readTextRows(br *bufio.Reader, fn func(wal.Tuple) error) error {
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long row: gather it whole.
			rest, err2 := br.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		if len(line) > 0 {
			row, perr := ParseCopyText(line)
			if perr != nil {
				return sourceError{perr}
			}
			if err := fn(row); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return sourceError{err}
		}
	}
}

// readBinaryRows turns binary rows into the text the change stream
// carries, so that callers see the same values whatever the format.
func readBinaryRows(br *bufio.Reader, t Table, fn func(wal.Tuple) error) error {
	r := pgcopy.NewBinaryReader(br)
	for {
		fields, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return sourceError{err}
		}
		if len(fields) != len(t.ColumnTypes) {
			return sourceError{fmt.Errorf("binary row of %s.%s has %d fields, the manifest lists %d column types", t.Schema, t.Name, len(fields), len(t.ColumnTypes))}
		}
		row := make(wal.Tuple, len(fields))
		for i, v := range fields {
			if v == nil {
				row[i] = wal.Value{Kind: wal.KindNull}
				continue
			}
			text, err := pgcopy.AppendText(nil, t.ColumnTypes[i], v)
			if err != nil {
				return sourceError{fmt.Errorf("column %s of %s.%s: %w", t.Columns[i], t.Schema, t.Name, err)}
			}
			row[i] = wal.Value{Kind: wal.KindText, Data: text}
		}
		if err := fn(row); err != nil {
			return err
		}
	}
}

// ParseCopyText decodes one line of COPY text format: tab-separated
// fields, \N for NULL, backslash escapes as PostgreSQL writes them.
func ParseCopyText(line []byte) (wal.Tuple, error) {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	var row wal.Tuple
	field := make([]byte, 0, 64)
	for i := 0; ; {
		// one field
		if i+2 <= len(line) && line[i] == '\\' && line[i+1] == 'N' && (i+2 == len(line) || line[i+2] == '\t') {
			row = append(row, wal.Value{Kind: wal.KindNull})
			i += 2
		} else {
			field = field[:0]
			for i < len(line) && line[i] != '\t' {
				c := line[i]
				if c != '\\' {
					field = append(field, c)
					i++
					continue
				}
				if i+1 >= len(line) {
					return nil, errors.New("COPY data ends in a lone backslash")
				}
				e := line[i+1]
				i += 2
				switch e {
				case 'b':
					field = append(field, '\b')
				case 'f':
					field = append(field, '\f')
				case 'n':
					field = append(field, '\n')
				case 'r':
					field = append(field, '\r')
				case 't':
					field = append(field, '\t')
				case 'v':
					field = append(field, '\v')
				case 'x':
					j := i
					for j < len(line) && j < i+2 && isHex(line[j]) {
						j++
					}
					v, _ := strconv.ParseUint(string(line[i:j]), 16, 8)
					field = append(field, byte(v))
					i = j
				case '0', '1', '2', '3', '4', '5', '6', '7':
					j := i - 1
					for j < len(line) && j < i+2 && line[j] >= '0' && line[j] <= '7' {
						j++
					}
					v, _ := strconv.ParseUint(string(line[i-1:j]), 8, 8)
					field = append(field, byte(v))
					i = j
				default:
					field = append(field, e)
				}
			}
			row = append(row, wal.Value{Kind: wal.KindText, Data: append([]byte(nil), field...)})
		}
		if i >= len(line) {
			return row, nil
		}
		i++ // the tab
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
