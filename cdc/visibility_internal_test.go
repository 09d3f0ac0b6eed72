package cdc

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseSnapshot(t *testing.T) {
	for _, tc := range []struct {
		text string
		want snapshot
	}{
		{"748:748:", snapshot{xmin: 748, xmax: 748}},
		{"740:750:740,745", snapshot{xmin: 740, xmax: 750, xip: []uint64{740, 745}}},
		{"4294967290:4294967310:4294967295,4294967300", snapshot{xmin: 4294967290, xmax: 4294967310, xip: []uint64{4294967295, 4294967300}}},
		{"18446744073709551610:18446744073709551615:18446744073709551614", snapshot{xmin: 18446744073709551610, xmax: 18446744073709551615, xip: []uint64{18446744073709551614}}},
	} {
		got, err := parseSnapshot(tc.text)
		if err != nil {
			t.Errorf("parseSnapshot(%q): %v", tc.text, err)
			continue
		}
		if got.xmin != tc.want.xmin || got.xmax != tc.want.xmax || !slices.Equal(got.xip, tc.want.xip) {
			t.Errorf("parseSnapshot(%q) = %+v, want %+v", tc.text, got, tc.want)
		}
	}
}

func TestParseSnapshotRefuses(t *testing.T) {
	for _, text := range []string{
		"",
		"748",
		"748:748",
		"x:748:",
		"748:y:",
		"-1:748:",
		"750:740:",                // xmin past xmax
		"740:750:739",             // xip below xmin
		"740:750:750",             // xip at xmax
		"740:750:741,",            // empty entry
		"740:750:741,,742",        // empty entry
		"740:750: 741",            // space
		"740:750:741:742",         // a fourth field
		"18446744073709551616:1:", // overflow
	} {
		if snap, err := parseSnapshot(text); err == nil {
			t.Errorf("parseSnapshot(%q) = %+v, want an error", text, snap)
		}
	}
}

func TestSnapshotRunning(t *testing.T) {
	const epoch = uint64(1) << 32 // xid8 values past 2³², as after a wraparound
	for _, tc := range []struct {
		name    string
		snap    snapshot
		running []uint32
		ended   []uint32
	}{{
		name:    "below 2^32",
		snap:    snapshot{xmin: 740, xmax: 750, xip: []uint64{740, 745}},
		running: []uint32{740, 745, 750, 751, 760},
		ended:   []uint32{739, 741, 744, 746, 749, 3, 100},
	}, {
		name:    "idle server: xmin = xmax, nothing listed",
		snap:    snapshot{xmin: 748, xmax: 748},
		running: []uint32{748, 749},
		ended:   []uint32{747, 3},
	}, {
		name:    "past 2^32: compared by their low 32 bits",
		snap:    snapshot{xmin: 3*epoch + 740, xmax: 3*epoch + 750, xip: []uint64{3*epoch + 740, 3*epoch + 745}},
		running: []uint32{740, 745, 750, 751},
		ended:   []uint32{739, 741, 749},
	}, {
		name: "xmin before the epoch's turn, xmax after it",
		snap: snapshot{
			xmin: 2*epoch - 10, xmax: 2*epoch + 5,
			xip: []uint64{2*epoch - 10, 2*epoch - 1, 2*epoch + 3},
		},
		running: []uint32{0xFFFFFFF6, 0xFFFFFFFF, 3, 5, 6, 100},
		ended:   []uint32{0xFFFFFFF5, 0xFFFFFFF7, 0xFFFFFFFE, 4, 0x80000006},
	}, {
		name:    "xmax just past the epoch's turn: an xid from the epoch before has ended",
		snap:    snapshot{xmin: 2*epoch + 1, xmax: 2*epoch + 1},
		running: []uint32{1, 2, 1000},
		ended:   []uint32{0xFFFFFFFF, 0xFFFFFF00, 0x80000002},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, xid := range tc.running {
				if !tc.snap.running(xid) {
					t.Errorf("%+v: transaction %d (%#x) should be running", tc.snap, xid, xid)
				}
			}
			for _, xid := range tc.ended {
				if tc.snap.running(xid) {
					t.Errorf("%+v: transaction %d (%#x) should have ended", tc.snap, xid, xid)
				}
			}
			if len(tc.running) > 0 {
				xids := append(slices.Clone(tc.ended), tc.running[0])
				if got, ok := tc.snap.firstRunning(xids); !ok || got != tc.running[0] {
					t.Errorf("firstRunning(%v) = %d, %v; want %d", xids, got, ok, tc.running[0])
				}
			}
			if got, ok := tc.snap.firstRunning(tc.ended); ok {
				t.Errorf("firstRunning(%v) = %d, want none", tc.ended, got)
			}
		})
	}
}

// FuzzParseSnapshot: parsing never panics, and what it accepts is a well-formed
// snapshot that prints back to an equivalent text.
func FuzzParseSnapshot(f *testing.F) {
	for _, s := range []string{"748:748:", "740:750:740,745", "4294967290:4294967310:4294967295", "1:2:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		snap, err := parseSnapshot(text)
		if err != nil {
			return
		}
		if snap.xmin > snap.xmax {
			t.Fatalf("%q: xmin past xmax: %+v", text, snap)
		}
		for _, x := range snap.xip {
			if x < snap.xmin || x >= snap.xmax {
				t.Fatalf("%q: xip %d outside [xmin, xmax): %+v", text, x, snap)
			}
		}
		again, err := parseSnapshot(snapshotText(snap))
		if err != nil || again.xmin != snap.xmin || again.xmax != snap.xmax || !slices.Equal(again.xip, snap.xip) {
			t.Fatalf("%q: %+v does not parse back: %+v, %v", text, snap, again, err)
		}
	})
}

func snapshotText(s snapshot) string {
	xip := make([]string, len(s.xip))
	for i, x := range s.xip {
		xip[i] = strconv.FormatUint(x, 10)
	}
	return strconv.FormatUint(s.xmin, 10) + ":" + strconv.FormatUint(s.xmax, 10) + ":" + strings.Join(xip, ",")
}
