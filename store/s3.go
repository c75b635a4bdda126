package store

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"
)

// Defaults for S3 uploads.
const (
	// DefaultS3MultipartThreshold is the object size from which S3.Put uses a
	// multipart upload.
	DefaultS3MultipartThreshold = 64 << 20
	// DefaultS3PartSize is the part size of multipart uploads. S3 needs at
	// least 5 MiB for every part but the last.
	DefaultS3PartSize = 16 << 20
	// DefaultS3PartConcurrency is how many parts of one object upload at once.
	DefaultS3PartConcurrency = 4
	// DefaultS3MaxAttempts is how many times a request is tried (first try
	// included) when neither the URL nor the AWS configuration says otherwise.
	DefaultS3MaxAttempts = 5

	s3MaxParts = 10000
)

// s3Params are the query parameters an s3:// URL may carry.
var s3Params = []string{
	"endpoint", "region", "path_style",
	"access_key_id", "secret_access_key", "session_token",
	"max_attempts", "max_backoff",
}

// S3 is a Store in an S3 (or S3-compatible) bucket: s3://bucket/prefix.
//
// Endpoint, region and credentials come from the standard AWS configuration
// chain (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_PROFILE,
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, shared config files, instance
// roles, ...). URL query parameters override them:
//
//	endpoint=http://127.0.0.1:9000     S3-compatible server (MinIO, Ceph, ...)
//	region=eu-west-1                   defaults to us-east-1 when unset anywhere
//	path_style=true|false              defaults to true when a custom endpoint is set
//	access_key_id=..&secret_access_key=..[&session_token=..]  static credentials
//	max_attempts=5                     tries per request, first included
//	max_backoff=20s                    cap on the wait between tries
//
// Objects live under prefix. Every upload carries a Content-MD5 (checked by
// every S3 implementation) and, unless AWS_REQUEST_CHECKSUM_CALCULATION is
// when_required, a CRC32C checksum, so the server rejects a corrupted body.
// Throttling, 5xx and connection errors are retried with jittered exponential
// backoff by the SDK's standard retryer.
type S3 struct {
	// MultipartThreshold is the size from which Put uses a multipart upload
	// (DefaultS3MultipartThreshold when zero). Set it before the first Put.
	MultipartThreshold int64
	// PartSize is the multipart part size (DefaultS3PartSize when zero). It
	// is raised as needed to stay within S3's 10,000 parts. Real S3 rejects
	// parts under 5 MiB (except the last); tests may set it lower.
	PartSize int64
	// PartConcurrency is how many parts of one object upload at once
	// (DefaultS3PartConcurrency when zero).
	PartConcurrency int

	client   *s3.Client
	bucket   string
	prefix   string // "" or ends in "/"
	endpoint string // for messages
	region   string
	url      string // redacted
	sendCRC  bool
	log      *zap.Logger
}

func openS3(ctx context.Context, u *url.URL, log *zap.Logger) (Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	redacted := Redact(u.String())
	fail := func(format string, a ...any) error {
		return fmt.Errorf("store URL %q: %s", redacted, fmt.Sprintf(format, a...))
	}
	if u.Host == "" {
		return nil, fail("missing bucket (expected s3://bucket/prefix)")
	}
	q := u.Query()
	for k := range q {
		if !contains(s3Params, k) {
			return nil, fail("unknown parameter %q (known: %s)", k, strings.Join(s3Params, ", "))
		}
	}
	s := &S3{bucket: u.Host, prefix: cleanPrefix(u.Path), url: redacted, log: log}

	var loadOpts []func(*config.LoadOptions) error
	if r := q.Get("region"); r != "" {
		loadOpts = append(loadOpts, config.WithRegion(r))
	}
	ak, sk := q.Get("access_key_id"), q.Get("secret_access_key")
	if (ak == "") != (sk == "") {
		return nil, fail("access_key_id and secret_access_key must be given together")
	}
	if ak != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(ak, sk, q.Get("session_token"))))
	}
	endpoint := q.Get("endpoint")
	if endpoint != "" {
		if !strings.Contains(endpoint, "://") {
			endpoint = "https://" + endpoint
		}
		eu, err := url.Parse(endpoint)
		if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
			return nil, fail("endpoint %q is not an http(s) URL", q.Get("endpoint"))
		}
	}
	var pathStyle *bool
	if v := q.Get("path_style"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fail("path_style=%q: want true or false", v)
		}
		pathStyle = &b
	}
	maxAttempts := 0
	if v := q.Get("max_attempts"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fail("max_attempts=%q: want a positive integer", v)
		}
		maxAttempts = n
	}
	var maxBackoff time.Duration
	if v := q.Get("max_backoff"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fail("max_backoff=%q: want a duration such as 5s", v)
		}
		maxBackoff = d
	}

	loadOpts = append(loadOpts, config.WithLogger(s3Logger{log}))
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fail("loading AWS configuration: %v", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	s.region = cfg.Region
	s.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		if pathStyle != nil {
			o.UsePathStyle = *pathStyle
		} else if o.BaseEndpoint != nil {
			// S3-compatible servers rarely have wildcard DNS for
			// virtual-hosted buckets.
			o.UsePathStyle = true
		}
		switch {
		case maxAttempts > 0:
			o.RetryMaxAttempts = maxAttempts
		case cfg.RetryMaxAttempts == 0:
			o.RetryMaxAttempts = DefaultS3MaxAttempts
		}
		if maxBackoff > 0 {
			o.Retryer = retry.AddWithMaxBackoffDelay(o.Retryer, maxBackoff)
		}
		// GetObject asks for checksum validation; servers that store none
		// would make the SDK log a warning on every read.
		o.DisableLogOutputChecksumValidationSkipped = true
		s.sendCRC = o.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired
		if o.BaseEndpoint != nil {
			s.endpoint = *o.BaseEndpoint
		} else {
			s.endpoint = "https://s3." + o.Region + ".amazonaws.com"
		}
	})
	log.Debug("opened S3 store", zap.String("url", s.url), zap.String("endpoint", s.endpoint),
		zap.String("region", s.region), zap.Bool("crc32c", s.sendCRC))
	return s, nil
}

// s3Logger sends the SDK's own log lines (warnings such as an IMDS
// fallback) to zap instead of stderr. The SDK logs no request contents
// unless ClientLogMode asks for them, and we never do.
type s3Logger struct{ log *zap.Logger }

func (l s3Logger) Logf(c logging.Classification, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if c == logging.Warn {
		l.log.Warn(msg, zap.String("component", "aws-sdk"))
		return
	}
	l.log.Debug(msg, zap.String("component", "aws-sdk"))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// cleanPrefix turns a URL path into "" or "dir/sub/".
func cleanPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return p + "/"
}

// checkObjectKey rejects keys that no backend can store under that name.
func checkObjectKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return fmt.Errorf("invalid object key %q", key)
	}
	return nil
}

// URL implements Store.
func (s *S3) URL() string { return s.url }

// Check implements Store: it verifies that credentials are available and
// that HeadBucket succeeds, and says what to fix when it does not.
func (s *S3) Check(ctx context.Context) error {
	creds := s.client.Options().Credentials
	if creds == nil {
		return fmt.Errorf("store %s: no AWS credentials configured: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or access_key_id/secret_access_key in the store URL", s.url)
	}
	if _, err := creds.Retrieve(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("store %s: check: %w", s.url, err)
		}
		return fmt.Errorf("store %s: no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or access_key_id/secret_access_key in the store URL: %w", s.url, err)
	}
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err == nil {
		return nil
	}
	status, code := s3ErrorStatus(err)
	var sendErr *smithyhttp.RequestSendError
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("store %s: check bucket %q at %s: %w", s.url, s.bucket, s.endpoint, err)
	case status == http.StatusNotFound || code == "NoSuchBucket" || code == "NotFound":
		return fmt.Errorf("store %s: bucket %q does not exist at %s: create it or fix the store URL: %w", s.url, s.bucket, s.endpoint, err)
	case status == http.StatusForbidden || status == http.StatusUnauthorized || s3CredentialCode(code):
		return fmt.Errorf("store %s: credentials rejected by %s (HTTP %d): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or access_key_id/secret_access_key in the store URL) and that they may access bucket %q: %w", s.url, s.endpoint, status, s.bucket, err)
	case status == http.StatusMovedPermanently || (status == http.StatusBadRequest && s3BucketRegion(err) != ""):
		if r := s3BucketRegion(err); r != "" && r != s.region {
			return fmt.Errorf("store %s: bucket %q is in region %s, not %s: set AWS_REGION or region=%s in the store URL: %w", s.url, s.bucket, r, s.region, r, err)
		}
		return fmt.Errorf("store %s: bucket %q at %s answered with a redirect: check the region and endpoint: %w", s.url, s.bucket, s.endpoint, err)
	case errors.As(err, &sendErr):
		return fmt.Errorf("store %s: cannot reach %s: %w", s.url, s.endpoint, err)
	default:
		return fmt.Errorf("store %s: check bucket %q at %s: %w", s.url, s.bucket, s.endpoint, err)
	}
}

// s3ErrorStatus returns the HTTP status and the S3 error code in err, if any.
func s3ErrorStatus(err error) (int, string) {
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	code := ""
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	return status, code
}

func s3CredentialCode(code string) bool {
	switch code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
		return true
	}
	return false
}

func s3BucketRegion(err error) string {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}

// s3IsNotFound reports whether err says the object (not the bucket) is missing.
func s3IsNotFound(err error) bool {
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nsk) {
		return true
	}
	status, code := s3ErrorStatus(err)
	if code == "NoSuchBucket" {
		return false
	}
	return code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound
}

func (s *S3) threshold() int64 {
	if s.MultipartThreshold > 0 {
		return s.MultipartThreshold
	}
	return DefaultS3MultipartThreshold
}

// Put implements Store. Objects smaller than MultipartThreshold go up in one
// PutObject; larger ones in a multipart upload that is aborted on failure.
// Either way the object appears atomically.
func (s *S3) Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error {
	if err := checkObjectKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("put %s to %s: negative size %d", key, s.url, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s to %s: %w", key, s.url, err)
	}
	start, err := r.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("put %s to %s: %w", key, s.url, err)
	}
	if size >= s.threshold() {
		err = s.putMultipart(ctx, key, r, start, size)
	} else {
		err = s.putSingle(ctx, key, newSectionSeeker(r, start, size), size)
	}
	if err != nil {
		return fmt.Errorf("put %s to %s: %w", key, s.url, err)
	}
	return nil
}

func (s *S3) putSingle(ctx context.Context, key string, body io.ReadSeeker, size int64) error {
	sum, err := md5Base64(body)
	if err != nil {
		return err
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.prefix + key),
		Body:          body,
		ContentLength: aws.Int64(size),
		ContentMD5:    aws.String(sum),
		ContentType:   aws.String("application/octet-stream"),
	}
	if s.sendCRC {
		in.ChecksumAlgorithm = s3types.ChecksumAlgorithmCrc32c
	}
	_, err = s.client.PutObject(ctx, in)
	return err
}

// md5Base64 digests r from its start and rewinds it.
func md5Base64(r io.ReadSeeker) (string, error) {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h := md5.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}

func (s *S3) putMultipart(ctx context.Context, key string, r io.ReadSeeker, start, size int64) error {
	partSize := s.PartSize
	if partSize <= 0 {
		partSize = DefaultS3PartSize
	}
	if floor := (size + s3MaxParts - 1) / s3MaxParts; partSize < floor {
		partSize = floor
	}
	conc := s.PartConcurrency
	if conc <= 0 {
		conc = DefaultS3PartConcurrency
	}
	nparts := int((size + partSize - 1) / partSize)

	create := &s3.CreateMultipartUploadInput{
		Bucket:      aws.String(s.bucket),
		Key:         aws.String(s.prefix + key),
		ContentType: aws.String("application/octet-stream"),
	}
	if s.sendCRC {
		create.ChecksumAlgorithm = s3types.ChecksumAlgorithmCrc32c
	}
	out, err := s.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		return err
	}
	uploadID := out.UploadId

	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		parts    = make([]s3types.CompletedPart, nparts)
		sem      = make(chan struct{}, conc)
	)
	setErr := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	// Parts are read concurrently through ReadAt when r allows it (files,
	// bytes.Reader); otherwise each part is read into memory in turn.
	ra, canReadAt := r.(io.ReaderAt)
	if !canReadAt {
		if _, err := r.Seek(start, io.SeekStart); err != nil {
			setErr(err)
		}
	}
	for i := 0; i < nparts && pctx.Err() == nil; i++ {
		off := int64(i) * partSize
		n := min(partSize, size-off)
		select {
		case sem <- struct{}{}:
		case <-pctx.Done():
		}
		if pctx.Err() != nil {
			break
		}
		var body io.ReadSeeker
		if canReadAt {
			body = io.NewSectionReader(ra, start+off, n)
		} else {
			buf := make([]byte, n)
			if _, err := io.ReadFull(r, buf); err != nil {
				<-sem
				setErr(fmt.Errorf("reading part %d: %w", i+1, err))
				break
			}
			body = bytes.NewReader(buf)
		}
		wg.Add(1)
		go func(num int32, body io.ReadSeeker, n int64) {
			defer wg.Done()
			defer func() { <-sem }()
			sum, err := md5Base64(body)
			if err != nil {
				setErr(fmt.Errorf("reading part %d: %w", num, err))
				return
			}
			in := &s3.UploadPartInput{
				Bucket:        aws.String(s.bucket),
				Key:           aws.String(s.prefix + key),
				UploadId:      uploadID,
				PartNumber:    aws.Int32(num),
				Body:          body,
				ContentLength: aws.Int64(n),
				ContentMD5:    aws.String(sum),
			}
			if s.sendCRC {
				in.ChecksumAlgorithm = s3types.ChecksumAlgorithmCrc32c
			}
			po, err := s.client.UploadPart(pctx, in)
			if err != nil {
				setErr(fmt.Errorf("part %d: %w", num, err))
				return
			}
			parts[num-1] = s3types.CompletedPart{
				PartNumber:     aws.Int32(num),
				ETag:           po.ETag,
				ChecksumCRC32C: po.ChecksumCRC32C,
			}
		}(int32(i+1), body, n)
	}
	wg.Wait()
	mu.Lock()
	err = firstErr
	mu.Unlock()
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket:          aws.String(s.bucket),
			Key:             aws.String(s.prefix + key),
			UploadId:        uploadID,
			MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
		})
	}
	if err != nil {
		// Abort even when ctx is done, so that the parts stop costing money.
		actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer acancel()
		if _, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + key), UploadId: uploadID,
		}); aerr != nil {
			s.log.Warn("aborting multipart upload failed; a bucket lifecycle rule should clean it up",
				zap.String("store", s.url), zap.String("key", key), zap.Error(aerr))
		}
		return fmt.Errorf("multipart upload: %w", err)
	}
	return nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkObjectKey(key); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil {
		if s3IsNotFound(err) {
			return nil, fmt.Errorf("get %s from %s: %w", key, s.url, ErrNotFound)
		}
		return nil, fmt.Errorf("get %s from %s: %w", key, s.url, err)
	}
	return out.Body, nil
}

// List implements Store. ListObjectsV2 pages are followed to the end.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + prefix),
	})
	var out []Object
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", prefix, s.url, err)
		}
		for _, o := range page.Contents {
			key := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if key == "" || strings.HasSuffix(key, "/") {
				continue // "directory" placeholders made by consoles
			}
			out = append(out, Object{Key: key, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := checkObjectKey(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil && !s3IsNotFound(err) {
		return fmt.Errorf("delete %s from %s: %w", key, s.url, err)
	}
	return nil
}

// Close implements Store.
func (s *S3) Close() error {
	// The SDK's default client (which honours AWS_CA_BUNDLE and the SDK's
	// timeouts) cannot drop its idle connections; they time out after 90 s.
	if c, ok := s.client.Options().HTTPClient.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return nil
}

// sectionSeeker exposes size bytes of r from offset base as a ReadSeeker
// whose offset 0 is base, so that retries and checksums see exactly the
// object.
type sectionSeeker struct {
	r          io.ReadSeeker
	base, size int64
	off        int64 // relative to base
	synced     bool  // r's position equals base+off
}

func newSectionSeeker(r io.ReadSeeker, base, size int64) *sectionSeeker {
	return &sectionSeeker{r: r, base: base, size: size, synced: true}
}

func (s *sectionSeeker) Read(p []byte) (int, error) {
	if s.off >= s.size {
		return 0, io.EOF
	}
	if !s.synced {
		if _, err := s.r.Seek(s.base+s.off, io.SeekStart); err != nil {
			return 0, err
		}
		s.synced = true
	}
	if rem := s.size - s.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := s.r.Read(p)
	s.off += int64(n)
	if err == io.EOF && s.off < s.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (s *sectionSeeker) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = s.off + offset
	case io.SeekEnd:
		abs = s.size + offset
	default:
		return 0, errors.New("sectionSeeker: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("sectionSeeker: negative position")
	}
	if abs != s.off {
		s.off = abs
		s.synced = false
	}
	return abs, nil
}
