package basebackup

import (
	"testing"

	"github.com/wayback-pitr/wayback/wal"
)

func TestParseCopyText(t *testing.T) {
	row, err := ParseCopyText([]byte("1\t\\N\ta\\tb\\nc\\\\d\t\t\\x41\\101\\N\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []wal.Value{
		{Kind: wal.KindText, Data: []byte("1")},
		{Kind: wal.KindNull},
		{Kind: wal.KindText, Data: []byte("a\tb\nc\\d")},
		{Kind: wal.KindText, Data: []byte("")},
		{Kind: wal.KindText, Data: []byte("AAN")}, // \N is NULL only as a whole field
	}
	if len(row) != len(want) {
		t.Fatalf("got %d fields: %+v", len(row), row)
	}
	for i := range want {
		if row[i].Kind != want[i].Kind || string(row[i].Data) != string(want[i].Data) {
			t.Fatalf("field %d = %q (%c), want %q (%c)", i, row[i].Data, row[i].Kind, want[i].Data, want[i].Kind)
		}
	}
}
