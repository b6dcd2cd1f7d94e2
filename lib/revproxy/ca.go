package revproxy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The files of the CA in its directory (<cache-dir>/revproxy).
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 7 * 24 * time.Hour
	leafRenew    = 24 * time.Hour // a leaf this close to expiry is replaced
	maxLeaves    = 1024           // leaves kept in memory
)

// A CA is the proxy's certificate authority: it signs the leaf
// certificates with which the proxy terminates TLS for its targets.
type CA struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertPEM  []byte // the certificate, PEM-encoded: what clients must trust
	CertFile string // where the certificate is kept
	KeyFile  string // where the key is kept (mode 0600)
	Created  bool   // whether LoadOrCreateCA made it
}

// LoadOrCreateCA loads the CA kept in dir (ca.pem and ca-key.pem), or
// creates one there if there is none: an ECDSA P-256 key, written with
// mode 0600, and a self-signed certificate valid for ten years. Two
// processes creating one at once agree on a single CA.
func LoadOrCreateCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for attempt := 0; ; attempt++ {
		ca, err := loadCA(certFile, keyFile)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			return ca, err
		}
		_, kerr := os.Stat(keyFile)
		_, cerr := os.Stat(certFile)
		switch {
		case kerr == nil && cerr != nil && attempt < 50:
			// Another process is between writing the key and the
			// certificate: look again shortly.
			time.Sleep(20 * time.Millisecond)
			continue
		case kerr == nil && cerr != nil:
			return nil, fmt.Errorf("CA: %s exists but %s does not; remove %s to make a new CA", keyFile, certFile, keyFile)
		case kerr != nil && cerr == nil:
			return nil, fmt.Errorf("CA: %s exists but %s does not; remove %s to make a new CA", certFile, keyFile, certFile)
		}
		created, err := createCA(dir, certFile, keyFile)
		if err != nil {
			return nil, err
		}
		if !created {
			continue // another process won: load its CA
		}
		ca, err = loadCA(certFile, keyFile)
		if ca != nil {
			ca.Created = true
		}
		return ca, err
	}
}

// loadCA reads and checks a CA's files.
func loadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA %s, %s: %w", certFile, keyFile, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", certFile, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA %s: the certificate is not a CA's", certFile)
	}
	if now := time.Now(); now.After(cert.NotAfter.Add(-leafValidity)) {
		return nil, fmt.Errorf("CA %s expires %v; remove %s and %s to make a new one (clients must then trust it anew)",
			certFile, cert.NotAfter.Format(time.DateOnly), certFile, keyFile)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA %s: the key cannot sign", keyFile)
	}
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(keyFile, 0o600); err != nil {
			return nil, fmt.Errorf("CA key %s is readable by others (mode %v) and cannot be fixed: %w", keyFile, fi.Mode().Perm(), err)
		}
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, CertFile: certFile, KeyFile: keyFile}, nil
}

// createCA writes a new CA into dir, unless another process got there
// first (then it reports false). The key is put in place with a link,
// which fails if one exists, and the certificate after it.
func createCA(dir, certFile, keyFile string) (bool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("CA key: %w", err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"go-cache-plugin"}, CommonName: "go-cache-plugin revproxy CA " + host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return false, fmt.Errorf("CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, fmt.Errorf("CA key: %w", err)
	}
	write := func(pattern string, perm os.FileMode, block *pem.Block) (string, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return "", err
		}
		name := f.Name()
		err = f.Chmod(perm)
		if err == nil {
			err = pem.Encode(f, block)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(name)
			return "", err
		}
		return name, nil
	}
	tmpKey, err := write(".ca-key-*", 0o600, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err != nil {
		return false, fmt.Errorf("write CA key: %w", err)
	}
	defer os.Remove(tmpKey)
	tmpCert, err := write(".ca-*", 0o644, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err != nil {
		return false, fmt.Errorf("write CA certificate: %w", err)
	}
	defer os.Remove(tmpCert)
	if err := os.Link(tmpKey, keyFile); errors.Is(err, fs.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("install CA key: %w", err)
	}
	if err := os.Rename(tmpCert, certFile); err != nil {
		os.Remove(keyFile)
		return false, fmt.Errorf("install CA certificate: %w", err)
	}
	return true, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported systems.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// leafCerts mints and keeps leaf certificates for target names.
type leafCerts struct {
	ca  *CA
	key *ecdsa.PrivateKey // shared by every leaf

	mu    sync.Mutex
	certs map[string]*tls.Certificate
}

func newLeafCerts(ca *CA) (*leafCerts, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leaf key: %w", err)
	}
	return &leafCerts{ca: ca, key: key, certs: map[string]*tls.Certificate{}}, nil
}

// get returns a certificate for name (a host name or an IP address).
func (l *leafCerts) get(name string) (*tls.Certificate, error) {
	name = strings.ToLower(name)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.certs[name]; ok && now.Before(c.Leaf.NotAfter.Add(-leafRenew)) {
		return c, nil
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{Organization: []string{"go-cache-plugin revproxy"}, CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(l.ca.Cert.NotAfter) {
		tmpl.NotAfter = l.ca.Cert.NotAfter
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, l.ca.Cert, l.key.Public(), l.ca.Key)
	if err != nil {
		return nil, fmt.Errorf("leaf certificate for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("leaf certificate for %s: %w", name, err)
	}
	c := &tls.Certificate{Certificate: [][]byte{der, l.ca.Cert.Raw}, PrivateKey: l.key, Leaf: leaf}
	if len(l.certs) >= maxLeaves {
		clear(l.certs)
	}
	l.certs[name] = c
	return c, nil
}

// A TrustStore is a system's store of trusted CAs in the Debian and
// Ubuntu layout: a directory of PEM files named *.crt and a command that
// rebuilds the bundle from it.
type TrustStore struct {
	Dir     string   // where local CAs go
	Name    string   // the file name of ours, ending in .crt
	Command []string // the command rebuilding the bundle
	// Geteuid reports the effective user; os.Geteuid if nil.
	Geteuid func() int
}

// DebianTrustStore is the system trust store of Debian and Ubuntu.
var DebianTrustStore = TrustStore{
	Dir:     "/usr/local/share/ca-certificates",
	Name:    "go-cache-plugin-revproxy.crt",
	Command: []string{"update-ca-certificates"},
}

// Install adds the CA to the trust store and returns a sentence saying
// what it did. A CA already installed is left alone.
func (ts TrustStore) Install(ca *CA) (string, error) {
	geteuid := ts.Geteuid
	if geteuid == nil {
		geteuid = os.Geteuid
	}
	path := filepath.Join(ts.Dir, ts.Name)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, ca.CertPEM) {
		return fmt.Sprintf("the CA is already in the system trust store (%s); nothing to do", path), nil
	}
	if _, err := os.Stat(ts.Dir); err != nil {
		return "", fmt.Errorf("install the CA: %s: %w (only the Debian/Ubuntu layout is supported; add %s to your system's trust store by hand)", ts.Dir, err, ca.CertFile)
	}
	cmd, err := exec.LookPath(ts.Command[0])
	if err != nil {
		return "", fmt.Errorf("install the CA: %w (only the Debian/Ubuntu layout is supported; add %s to your system's trust store by hand)", err, ca.CertFile)
	}
	if geteuid() != 0 {
		return "", fmt.Errorf("install the CA: writing %s and running %s needs root; run once as root (sudo), or copy %s there and run %s yourself",
			path, ts.Command[0], ca.CertFile, strings.Join(ts.Command, " "))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, ca.CertPEM, 0o644); err != nil {
		return "", fmt.Errorf("install the CA: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("install the CA: %w", err)
	}
	out, err := exec.Command(cmd, ts.Command[1:]...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("install the CA: wrote %s, but %s failed: %w\n%s", path, strings.Join(ts.Command, " "), err, out)
	}
	return fmt.Sprintf("added the CA to the system trust store: wrote %s and ran %s (%s)",
		path, strings.Join(ts.Command, " "), strings.TrimSpace(lastLine(string(out)))), nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
