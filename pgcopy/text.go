package pgcopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
)

// Built-in type OIDs (pg_type.oid, fixed in PostgreSQL's catalog).
const (
	BoolOID        = 16
	ByteaOID       = 17
	CharOID        = 18
	NameOID        = 19
	Int8OID        = 20
	Int2OID        = 21
	Int4OID        = 23
	TextOID        = 25
	OIDOID         = 26
	JSONOID        = 114
	CIDROID        = 650
	MoneyOID       = 790
	InetOID        = 869
	Float4OID      = 700
	Float8OID      = 701
	BPCharOID      = 1042
	VarcharOID     = 1043
	DateOID        = 1082
	TimeOID        = 1083
	TimestampOID   = 1114
	TimestamptzOID = 1184
	IntervalOID    = 1186
	TimetzOID      = 1266
	NumericOID     = 1700
	UUIDOID        = 2950
	JSONBOID       = 3802
)

// scalar lists the types AppendText converts exactly, each proven byte for
// byte against PostgreSQL 15's output functions by TestAppendText.
var scalar = map[uint32]bool{
	BoolOID: true, Int2OID: true, Int4OID: true, Int8OID: true, OIDOID: true,
	TextOID: true, VarcharOID: true, BPCharOID: true, NameOID: true, CharOID: true,
	ByteaOID: true, NumericOID: true, TimestamptzOID: true, TimestampOID: true,
	DateOID: true, UUIDOID: true, JSONOID: true, JSONBOID: true, Float8OID: true,
	Float4OID: true, TimeOID: true, IntervalOID: true, TimetzOID: true,
	InetOID: true, CIDROID: true, MoneyOID: true,
}

// arrayElem maps the array types whose element type is supported to that
// element type.
var arrayElem = map[uint32]uint32{
	1000: BoolOID, 1005: Int2OID, 1007: Int4OID, 1016: Int8OID, 1028: OIDOID,
	1009: TextOID, 1015: VarcharOID, 1014: BPCharOID, 1003: NameOID, 1002: CharOID,
	1001: ByteaOID, 1231: NumericOID, 1185: TimestamptzOID, 1115: TimestampOID,
	1182: DateOID, 2951: UUIDOID, 199: JSONOID, 3807: JSONBOID, 1022: Float8OID,
	1021: Float4OID, 1183: TimeOID, 1187: IntervalOID, 1270: TimetzOID,
	1041: InetOID, 651: CIDROID, 791: MoneyOID,
}

// Supported reports whether AppendText converts values of the type exactly.
func Supported(typeOID uint32) bool {
	if scalar[typeOID] {
		return true
	}
	_, ok := arrayElem[typeOID]
	return ok
}

// ErrUnsupported is the error (wrapped) of AppendText for a type it does
// not convert.
var ErrUnsupported = errors.New("no exact text conversion for this type")

// AppendText appends the text form PostgreSQL's output function gives the
// value, whose binary form (typsend output) is value, for built-in type
// typeOID, under wayback's pinned session settings (wal.PinTextSettings:
// DateStyle 'ISO, MDY', IntervalStyle postgres, TimeZone UTC,
// extra_float_digits 3, bytea_output hex). It fails, returning dst
// unchanged, for an unsupported type (ErrUnsupported) or a malformed value.
//
// An array value names its element type by OID. A different built-in
// type than the array type's element type is refused; any other OID is
// accepted, as PostgreSQL's array_recv does: an array of a domain over the
// element type names the domain, whose OID only its database knows, and
// holds the base type's binary values (a caller passes such a column as
// an array of the base type).
func AppendText(dst []byte, typeOID uint32, value []byte) ([]byte, error) {
	out, err := appendText(dst, typeOID, value)
	if err != nil {
		return dst, fmt.Errorf("pgcopy: type OID %d: %w", typeOID, err)
	}
	return out, nil
}

var errLength = errors.New("wrong length")

// appendText's switch must cover exactly the types in scalar (checked by
// TestSupportedMatches); arrays come last, being rarer.
func appendText(dst []byte, oid uint32, v []byte) ([]byte, error) {
	// Fixed-width types first check the width, so that a truncated value
	// cannot be mistaken for a shorter valid one.
	switch oid {
	case BoolOID:
		if len(v) != 1 {
			return dst, errLength
		}
		if v[0] != 0 {
			return append(dst, 't'), nil
		}
		return append(dst, 'f'), nil
	case Int2OID:
		if len(v) != 2 {
			return dst, errLength
		}
		return strconv.AppendInt(dst, int64(int16(binary.BigEndian.Uint16(v))), 10), nil
	case Int4OID:
		if len(v) != 4 {
			return dst, errLength
		}
		return strconv.AppendInt(dst, int64(int32(binary.BigEndian.Uint32(v))), 10), nil
	case Int8OID:
		if len(v) != 8 {
			return dst, errLength
		}
		return strconv.AppendInt(dst, int64(binary.BigEndian.Uint64(v)), 10), nil
	case OIDOID:
		if len(v) != 4 {
			return dst, errLength
		}
		return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(v)), 10), nil
	case TextOID, VarcharOID, BPCharOID, NameOID, JSONOID:
		// Their send functions send the text itself, in the client
		// encoding, just as the output functions do.
		return append(dst, v...), nil
	case JSONBOID:
		if len(v) < 1 || v[0] != 1 {
			return dst, errors.New("unknown jsonb version")
		}
		return append(dst, v[1:]...), nil
	case CharOID:
		return appendChar(dst, v)
	case ByteaOID:
		dst = append(dst, '\\', 'x')
		for _, b := range v {
			dst = append(dst, hexDigits[b>>4], hexDigits[b&15])
		}
		return dst, nil
	case UUIDOID:
		if len(v) != 16 {
			return dst, errLength
		}
		for i, b := range v {
			if i == 4 || i == 6 || i == 8 || i == 10 {
				dst = append(dst, '-')
			}
			dst = append(dst, hexDigits[b>>4], hexDigits[b&15])
		}
		return dst, nil
	case NumericOID:
		return appendNumeric(dst, v)
	case Float8OID:
		if len(v) != 8 {
			return dst, errLength
		}
		return appendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(v)), 64), nil
	case Float4OID:
		if len(v) != 4 {
			return dst, errLength
		}
		return appendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(v))), 32), nil
	case DateOID:
		if len(v) != 4 {
			return dst, errLength
		}
		return appendDate(dst, int32(binary.BigEndian.Uint32(v)))
	case TimestampOID, TimestamptzOID:
		if len(v) != 8 {
			return dst, errLength
		}
		return appendTimestamp(dst, int64(binary.BigEndian.Uint64(v)), oid == TimestamptzOID)
	case TimeOID:
		if len(v) != 8 {
			return dst, errLength
		}
		t := int64(binary.BigEndian.Uint64(v))
		if t < 0 || t > usecsPerDay {
			return dst, errors.New("time out of range")
		}
		return appendTime(dst, t), nil
	case TimetzOID:
		if len(v) != 12 {
			return dst, errLength
		}
		t := int64(binary.BigEndian.Uint64(v))
		zone := int32(binary.BigEndian.Uint32(v[8:]))
		if t < 0 || t > usecsPerDay || zone < -tzDispLimit || zone > tzDispLimit {
			return dst, errors.New("time with time zone out of range")
		}
		return appendZone(appendTime(dst, t), int(zone)), nil
	case IntervalOID:
		if len(v) != 16 {
			return dst, errLength
		}
		return appendInterval(dst, int64(binary.BigEndian.Uint64(v)), int32(binary.BigEndian.Uint32(v[8:])), int32(binary.BigEndian.Uint32(v[12:]))), nil
	case InetOID, CIDROID:
		return appendInet(dst, v, oid == CIDROID)
	case MoneyOID:
		if len(v) != 8 {
			return dst, errLength
		}
		return appendMoney(dst, int64(binary.BigEndian.Uint64(v))), nil
	}
	if elem, ok := arrayElem[oid]; ok {
		return appendArray(dst, elem, v)
	}
	return dst, ErrUnsupported
}

const hexDigits = "0123456789abcdef"

// appendChar prints "char" as PostgreSQL 15's charout does: the zero byte
// as the empty string and bytes with the high bit set as \ooo octal, so the
// output is valid in any encoding.
func appendChar(dst, v []byte) ([]byte, error) {
	if len(v) != 1 {
		return dst, errLength
	}
	c := v[0]
	switch {
	case c == 0:
		return dst, nil
	case c >= 0x80:
		return append(dst, '\\', '0'+c>>6, '0'+c>>3&7, '0'+c&7), nil
	}
	return append(dst, c), nil
}

// appendPadded appends v in decimal, zero-padded to at least width digits
// (v >= 0), like PostgreSQL's pg_ultostr_zeropad.
func appendPadded(dst []byte, v int64, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], v, 10)
	for i := len(s); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

// Numeric sign words of the binary format.
const (
	numericPos  = 0x0000
	numericNeg  = 0x4000
	numericNaN  = 0xC000
	numericPInf = 0xD000
	numericNInf = 0xF000
)

// appendNumeric follows numeric.c's get_str_from_var: base-10000 digits,
// weight in digits before the point, dscale decimal places shown (padding
// with zeros or cutting digits beyond it).
func appendNumeric(dst, v []byte) ([]byte, error) {
	if len(v) < 8 {
		return dst, errLength
	}
	ndigits := int(int16(binary.BigEndian.Uint16(v)))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	dscale := int(binary.BigEndian.Uint16(v[6:]))
	if ndigits < 0 || len(v) != 8+2*ndigits || dscale > 0x3fff {
		return dst, errors.New("malformed numeric")
	}
	digit := func(d int) int64 {
		if d < 0 || d >= ndigits {
			return 0
		}
		return int64(binary.BigEndian.Uint16(v[8+2*d:]))
	}
	for d := range ndigits {
		if digit(d) > 9999 {
			return dst, errors.New("invalid numeric digit")
		}
	}
	switch sign {
	case numericNaN:
		return append(dst, "NaN"...), nil
	case numericPInf:
		return append(dst, "Infinity"...), nil
	case numericNInf:
		return append(dst, "-Infinity"...), nil
	case numericNeg:
		dst = append(dst, '-')
	case numericPos:
	default:
		return dst, errors.New("invalid numeric sign")
	}
	d := 0
	if weight < 0 {
		dst = append(dst, '0')
		d = weight + 1
	} else {
		dst = strconv.AppendInt(dst, digit(0), 10)
		for d = 1; d <= weight; d++ {
			dst = appendPadded(dst, digit(d), 4)
		}
	}
	if dscale > 0 {
		dst = append(dst, '.')
		end := len(dst) + dscale
		for i := 0; i < dscale; i, d = i+4, d+1 {
			dst = appendPadded(dst, digit(d), 4)
		}
		dst = dst[:end]
	}
	return dst, nil
}

// appendFloat prints like float4out/float8out with extra_float_digits > 0:
// the shortest digits that round-trip (PostgreSQL's copy of Ryu), in fixed
// notation for decimal exponents -4 up to 5 (float4) or 14 (float8) and
// otherwise as d.ddde+XX.
func appendFloat(dst []byte, f float64, size int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	case f == 0:
		if math.Signbit(f) {
			return append(dst, "-0"...)
		}
		return append(dst, '0')
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	var tmp [32]byte
	var digs [24]byte
	digits, exp := shortest(digs[:0], tmp[:0], f, -1, size)
	// Go's shortest output may lie exactly halfway to a neighbouring float
	// (which parses back to f under round-half-even); PostgreSQL builds Ryu
	// without STRICTLY_SHORTEST, so it never takes such a bound and prints
	// the shortest correctly rounded digits strictly inside them instead.
	if onBound(f, size, digits, exp) {
		for n := len(digits); n <= 17; n++ {
			d, e := shortest(digs[:0], tmp[:0], f, n-1, size)
			if v, err := strconv.ParseFloat(string(strconv.AppendFloat(tmp[:0], f, 'e', n-1, size)), size); err == nil && v == f && !onBound(f, size, d, e) {
				digits, exp = d, e
				break
			}
		}
	}
	limit := 15
	if size == 32 {
		limit = 6
	}
	if exp < -4 || exp >= limit {
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if exp < 0 {
			dst = append(dst, '-')
			exp = -exp
		} else {
			dst = append(dst, '+')
		}
		return appendPadded(dst, int64(exp), 2)
	}
	switch {
	case exp < 0:
		dst = append(dst, '0', '.')
		for i := -1; i > exp; i-- {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	case len(digits) <= exp+1:
		dst = append(dst, digits...)
		for i := len(digits); i <= exp; i++ {
			dst = append(dst, '0')
		}
		return dst
	}
	dst = append(dst, digits[:exp+1]...)
	dst = append(dst, '.')
	return append(dst, digits[exp+1:]...)
}

// shortest formats f > 0 with strconv ('e', prec) and returns its
// significant digits, without trailing zeros, and the decimal exponent of
// the first one.
func shortest(digits, tmp []byte, f float64, prec, size int) ([]byte, int) {
	s := strconv.AppendFloat(tmp, f, 'e', prec, size)
	e := len(s) - 1
	for s[e] != 'e' {
		e--
	}
	exp := 0
	for _, c := range s[e+2:] {
		exp = exp*10 + int(c-'0')
	}
	if s[e+1] == '-' {
		exp = -exp
	}
	digits = append(digits, s[0])
	if e > 1 {
		digits = append(digits, s[2:e]...)
	}
	for len(digits) > 1 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	return digits, exp
}

// onBound reports whether the decimal d.ddd * 10^exp (digits) is exactly the
// midpoint between f > 0 and its upper or lower neighbour. Both sides are
// compared as odd * 2^k, in integers.
func onBound(f float64, size int, digits []byte, exp int) bool {
	// f = m * 2^e with m integer.
	var m uint64
	var e, mantBits int
	if size == 32 {
		b := math.Float32bits(float32(f))
		m, e, mantBits = uint64(b&(1<<23-1)), int(b>>23&0xff), 23
		if e == 0 {
			e = 1
		} else {
			m |= 1 << 23
		}
		e -= 127 + 23
	} else {
		b := math.Float64bits(f)
		m, e, mantBits = b&(1<<52-1), int(b>>52&0x7ff), 52
		if e == 0 {
			e = 1
		} else {
			m |= 1 << 52
		}
		e -= 1023 + 52
	}
	// The decimal: d * 10^k = odd * 5^k * 2^(t+k) for k >= 0; for k < 0
	// it is dyadic only if 5^-k divides d.
	var d uint64
	for _, c := range digits {
		d = d*10 + uint64(c-'0')
	}
	k := exp - (len(digits) - 1)
	t := 0
	for d%2 == 0 {
		d /= 2
		t++
	}
	if k >= 0 {
		for range k {
			hi, lo := bits.Mul64(d, 5)
			if hi != 0 || lo > 1<<62 {
				return false // larger than any bound
			}
			d = lo
		}
	} else {
		for range -k {
			if d%5 != 0 {
				return false
			}
			d /= 5
		}
	}
	odd, pow := d, t+k
	// Upper midpoint (2m+1) * 2^(e-1); lower (2m-1) * 2^(e-1), or
	// (4m-1) * 2^(e-2) when m is a power of two above the subnormals,
	// where the gap below is half the gap above.
	if odd == 2*m+1 && pow == e-1 {
		return true
	}
	if m == 1<<mantBits && e > minExp(size) {
		return odd == 4*m-1 && pow == e-2
	}
	return odd == 2*m-1 && pow == e-1
}

func minExp(size int) int {
	if size == 32 {
		return 1 - 127 - 23
	}
	return 1 - 1023 - 52
}

// Date and time constants of PostgreSQL's datetime code: dates count days
// and timestamps microseconds from 2000-01-01, whose Julian day is
// postgresEpochJDate.
const (
	postgresEpochJDate = 2451545
	usecsPerDay        = 86400_000_000
	usecsPerHour       = 3600_000_000
	usecsPerMinute     = 60_000_000
	usecsPerSec        = 1_000_000
	// Valid ranges (datatype/timestamp.h): 4713-11-24 BC (Julian day 0) to
	// the end of 294276 AD for timestamps, 5874897 AD for dates.
	minTimestamp = -211813488000000000
	endTimestamp = 9223371331200000000
	minDate      = -postgresEpochJDate
	endDate      = 2147483494 - postgresEpochJDate
	tzDispLimit  = 16 * 3600
)

// j2date is datetime.c's conversion of a Julian day to a Gregorian date,
// with its unsigned 32-bit arithmetic.
func j2date(jd int) (year, month, day int) {
	julian := uint32(jd) + 32044
	quad := julian / 146097
	extra := (julian-quad*146097)*4 + 3
	julian += 60 + quad*3 + extra/146097
	quad = julian / 1461
	julian -= quad * 1461
	y := julian * 4 / 1461
	if y != 0 {
		julian = (julian+305)%365 + 123
	} else {
		julian = (julian+306)%366 + 123
	}
	y += quad * 4
	year = int(y) - 4800
	quad = julian * 2141 / 65536
	day = int(julian - 7834*quad/256)
	month = int((quad+10)%12 + 1)
	return year, month, day
}

// appendYMD prints an ISO date; years before 1 AD are printed as BC years
// (year 0 is 1 BC), whose " BC" suffix the caller appends after the time.
func appendYMD(dst []byte, year, month, day int) []byte {
	if year <= 0 {
		year = -(year - 1)
	}
	dst = appendPadded(dst, int64(year), 4)
	dst = append(dst, '-')
	dst = appendPadded(dst, int64(month), 2)
	dst = append(dst, '-')
	return appendPadded(dst, int64(day), 2)
}

func appendDate(dst []byte, d int32) ([]byte, error) {
	switch {
	case d == math.MinInt32:
		return append(dst, "-infinity"...), nil
	case d == math.MaxInt32:
		return append(dst, "infinity"...), nil
	case d < minDate || d >= endDate:
		return dst, errors.New("date out of range")
	}
	y, m, day := j2date(int(d) + postgresEpochJDate)
	dst = appendYMD(dst, y, m, day)
	if y <= 0 {
		dst = append(dst, " BC"...)
	}
	return dst, nil
}

// appendTimestamp prints timestamp and, with tz, timestamptz in UTC (the
// pinned TimeZone), whose offset ISO style prints as +00.
func appendTimestamp(dst []byte, t int64, tz bool) ([]byte, error) {
	switch {
	case t == math.MinInt64:
		return append(dst, "-infinity"...), nil
	case t == math.MaxInt64:
		return append(dst, "infinity"...), nil
	case t < minTimestamp || t >= endTimestamp:
		return dst, errors.New("timestamp out of range")
	}
	date, tod := t/usecsPerDay, t%usecsPerDay
	if tod < 0 {
		tod += usecsPerDay
		date--
	}
	y, m, d := j2date(int(date) + postgresEpochJDate)
	dst = appendYMD(dst, y, m, d)
	dst = append(dst, ' ')
	dst = appendTime(dst, tod)
	if tz {
		dst = append(dst, "+00"...)
	}
	if y <= 0 {
		dst = append(dst, " BC"...)
	}
	return dst, nil
}

// appendTime prints a time of day given in microseconds as HH:MM:SS with
// the fraction, if any, without trailing zeros.
func appendTime(dst []byte, t int64) []byte {
	h := t / usecsPerHour
	t -= h * usecsPerHour
	m := t / usecsPerMinute
	t -= m * usecsPerMinute
	dst = appendPadded(dst, h, 2)
	dst = append(dst, ':')
	dst = appendPadded(dst, m, 2)
	dst = append(dst, ':')
	return appendSeconds(dst, t/usecsPerSec, t%usecsPerSec)
}

// appendSeconds is datetime.c's AppendSeconds with fillzeros: two-digit
// seconds and up to six fraction digits, trailing zeros dropped; the signs
// of sec and fsec are not printed.
func appendSeconds(dst []byte, sec, fsec int64) []byte {
	dst = appendPadded(dst, abs(sec), 2)
	if fsec == 0 {
		return dst
	}
	f := abs(fsec)
	n := 6
	for f%10 == 0 {
		f /= 10
		n--
	}
	dst = append(dst, '.')
	return appendPadded(dst, f, n)
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// appendZone is datetime.c's EncodeTimezone for ISO style; zone is in
// seconds west of Greenwich, so its sign is printed inverted.
func appendZone(dst []byte, zone int) []byte {
	if zone <= 0 {
		dst = append(dst, '+')
	} else {
		dst = append(dst, '-')
	}
	sec := int64(abs(int64(zone)))
	min := sec / 60
	sec -= min * 60
	hour := min / 60
	min -= hour * 60
	dst = appendPadded(dst, hour, 2)
	if sec != 0 || min != 0 {
		dst = append(dst, ':')
		dst = appendPadded(dst, min, 2)
	}
	if sec != 0 {
		dst = append(dst, ':')
		dst = appendPadded(dst, sec, 2)
	}
	return dst
}

// appendInterval is EncodeInterval for IntervalStyle postgres, e.g.
// "1 year 2 mons -3 days +04:05:06.7": each nonzero field with its unit, a
// "+" on a positive field that follows a negative one, and the time part
// whenever it is nonzero or nothing else was printed.
func appendInterval(dst []byte, usecs int64, days, months int32) []byte {
	zero, before := true, false
	part := func(v int64, unit string) {
		if v == 0 {
			return
		}
		if !zero {
			dst = append(dst, ' ')
		}
		if before && v > 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, v, 10)
		dst = append(dst, ' ')
		dst = append(dst, unit...)
		if v != 1 {
			dst = append(dst, 's')
		}
		before, zero = v < 0, false
	}
	part(int64(months/12), "year")
	part(int64(months%12), "mon")
	part(int64(days), "day")
	hour := usecs / usecsPerHour
	usecs -= hour * usecsPerHour
	min := usecs / usecsPerMinute
	usecs -= min * usecsPerMinute
	sec := usecs / usecsPerSec
	fsec := usecs - sec*usecsPerSec
	if zero || hour != 0 || min != 0 || sec != 0 || fsec != 0 {
		if !zero {
			dst = append(dst, ' ')
		}
		if hour < 0 || min < 0 || sec < 0 || fsec < 0 {
			dst = append(dst, '-')
		} else if before {
			dst = append(dst, '+')
		}
		dst = appendPadded(dst, abs(hour), 2)
		dst = append(dst, ':')
		dst = appendPadded(dst, abs(min), 2)
		dst = append(dst, ':')
		dst = appendSeconds(dst, sec, fsec)
	}
	return dst
}

// appendInet follows network_out and its inet_net_ntop (from BIND): IPv4
// as four decimal octets, IPv6 in hex words with the longest run of two or
// more zero words as "::" and the last 32 bits dotted when the address is
// IPv4-compatible or -mapped; "/bits" unless it is the full length, and
// always for cidr.
func appendInet(dst, v []byte, cidr bool) ([]byte, error) {
	if len(v) < 4 {
		return dst, errLength
	}
	family, nbits, nb := v[0], int(v[1]), int(v[3])
	addr := v[4:]
	maxBits := 32
	switch {
	case family == 2 && nb == 4 && len(addr) == 4:
	case family == 3 && nb == 16 && len(addr) == 16:
		maxBits = 128
	default:
		return dst, errors.New("malformed inet")
	}
	if nbits > maxBits {
		return dst, errors.New("malformed inet")
	}
	if family == 2 {
		dst = appendDotted(dst, addr)
	} else {
		var words [8]int
		for i := range words {
			words[i] = int(addr[2*i])<<8 | int(addr[2*i+1])
		}
		// The longest run of zero words (the first of equal ones).
		bestBase, bestLen, curBase, curLen := -1, 0, -1, 0
		for i, w := range words {
			if w == 0 {
				if curBase == -1 {
					curBase, curLen = i, 1
				} else {
					curLen++
				}
				if curLen > bestLen {
					bestBase, bestLen = curBase, curLen
				}
			} else {
				curBase = -1
			}
		}
		if bestLen < 2 {
			bestBase = -1
		}
		for i := 0; i < 8; i++ {
			if bestBase != -1 && i >= bestBase && i < bestBase+bestLen {
				if i == bestBase {
					dst = append(dst, ':')
				}
				continue
			}
			if i != 0 {
				dst = append(dst, ':')
			}
			if i == 6 && bestBase == 0 && (bestLen == 6 || bestLen == 7 && words[7] != 1 || bestLen == 5 && words[5] == 0xffff) {
				dst = appendDotted(dst, addr[12:])
				break
			}
			dst = strconv.AppendInt(dst, int64(words[i]), 16)
		}
		if bestBase != -1 && bestBase+bestLen == 8 {
			dst = append(dst, ':')
		}
	}
	if nbits != maxBits || cidr {
		dst = append(dst, '/')
		dst = strconv.AppendInt(dst, int64(nbits), 10)
	}
	return dst, nil
}

func appendDotted(dst, b []byte) []byte {
	for i, o := range b {
		if i > 0 {
			dst = append(dst, '.')
		}
		dst = strconv.AppendInt(dst, int64(o), 10)
	}
	return dst
}

// appendMoney is cash_out under lc_monetary C (pinned): "$", two decimals,
// thousands separated by commas, "-" before the "$" when negative.
func appendMoney(dst []byte, c int64) []byte {
	u := uint64(c)
	if c < 0 {
		dst = append(dst, '-')
		u = -u
	}
	dst = append(dst, '$')
	var buf [32]byte
	i := len(buf)
	for pos := 2; u != 0 || pos >= 0; pos-- {
		if pos == 0 {
			i--
			buf[i] = '.'
		} else if pos < 0 && pos%3 == 0 {
			i--
			buf[i] = ','
		}
		i--
		buf[i] = byte('0' + u%10)
		u /= 10
	}
	return append(dst, buf[i:]...)
}

// firstGenbkiObjectID is PostgreSQL's FirstGenbkiObjectId: OIDs below it
// are the built-in catalog's, the same in every database.
const firstGenbkiObjectID = 10000

// maxDim is PostgreSQL's MAXDIM, the most dimensions an array may have.
const maxDim = 6

// appendArray follows array_out: "{}" for an empty array, a "[lb:ub]...="
// prefix when any lower bound is not 1, nested braces per dimension, NULL
// for null elements, and elements quoted when they are empty, spell NULL,
// or contain a quote, backslash, brace, comma or white space.
func appendArray(dst []byte, elem uint32, v []byte) ([]byte, error) {
	if len(v) < 12 {
		return dst, errLength
	}
	ndim := int32(binary.BigEndian.Uint32(v))
	if got := binary.BigEndian.Uint32(v[8:]); got != elem && got < firstGenbkiObjectID {
		return dst, fmt.Errorf("array of element type OID %d, want %d", got, elem)
	}
	if ndim < 0 || ndim > maxDim || len(v) < 12+8*int(ndim) {
		return dst, errors.New("malformed array header")
	}
	if ndim == 0 {
		return append(dst, '{', '}'), nil
	}
	var dims [maxDim]int
	items, custom := 1, false
	for i := range int(ndim) {
		n := int32(binary.BigEndian.Uint32(v[12+8*i:]))
		lb := int32(binary.BigEndian.Uint32(v[16+8*i:]))
		if n < 0 || int64(lb)+int64(n) > math.MaxInt32+1 {
			return dst, errors.New("malformed array dimensions")
		}
		dims[i] = int(n)
		items *= int(n)
		if items > len(v) { // each element takes at least 4 bytes
			return dst, errors.New("malformed array dimensions")
		}
		custom = custom || lb != 1
	}
	if items == 0 {
		return append(dst, '{', '}'), nil
	}
	if custom {
		for i := range int(ndim) {
			lb := int64(int32(binary.BigEndian.Uint32(v[16+8*i:])))
			dst = append(dst, '[')
			dst = strconv.AppendInt(dst, lb, 10)
			dst = append(dst, ':')
			dst = strconv.AppendInt(dst, lb+int64(dims[i])-1, 10)
			dst = append(dst, ']')
		}
		dst = append(dst, '=')
	}
	rest := v[12+8*int(ndim):]
	// counts[i] is how many elements of dimension i the current row has
	// done; braces open and close as the counters roll over.
	var counts [maxDim]int
	for k := 0; k < items; k++ {
		// A new row of dimension i starts where all inner counters are 0.
		open := 0
		for i := int(ndim) - 1; i >= 0 && counts[i] == 0; i-- {
			open++
		}
		if k > 0 {
			dst = append(dst, ',')
		}
		for range open {
			dst = append(dst, '{')
		}
		if len(rest) < 4 {
			return dst, errLength
		}
		n := int(int32(binary.BigEndian.Uint32(rest)))
		rest = rest[4:]
		if n == -1 {
			dst = append(dst, "NULL"...)
		} else {
			if n < 0 || n > len(rest) {
				return dst, errors.New("malformed array element")
			}
			var err error
			start := len(dst)
			if dst, err = appendText(dst, elem, rest[:n]); err != nil {
				return dst, err
			}
			dst = quoteElement(dst, start)
			rest = rest[n:]
		}
		// Advance the counters from the innermost dimension, closing a
		// brace for each dimension that completes.
		for i := int(ndim) - 1; i >= 0; i-- {
			counts[i]++
			if counts[i] < dims[i] {
				break
			}
			counts[i] = 0
			dst = append(dst, '}')
		}
	}
	if len(rest) != 0 {
		return dst, errors.New("trailing bytes after array elements")
	}
	return dst, nil
}

// quoteElement quotes the element text dst[start:] in place if array_out
// would: it shifts the text right, from the end, to make room for the
// quotes and the backslashes before '"' and '\'.
func quoteElement(dst []byte, start int) []byte {
	s := dst[start:]
	need := len(s) == 0 || len(s) == 4 && (s[0]|0x20) == 'n' && (s[1]|0x20) == 'u' && (s[2]|0x20) == 'l' && (s[3]|0x20) == 'l'
	escapes := 0
	for _, c := range s {
		switch c {
		case '"', '\\':
			escapes++
			need = true
		case '{', '}', ',', ' ', '\t', '\n', '\r', '\v', '\f':
			need = true
		}
	}
	if !need {
		return dst
	}
	n := len(dst)
	for range escapes + 2 {
		dst = append(dst, 0)
	}
	w := len(dst) - 1
	dst[w] = '"'
	w--
	for r := n - 1; r >= start; r-- {
		c := dst[r]
		dst[w] = c
		w--
		if c == '"' || c == '\\' {
			dst[w] = '\\'
			w--
		}
	}
	dst[w] = '"'
	return dst
}
