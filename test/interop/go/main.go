// Interop verifier: go-jose v4 and golang-jwt v5 (+ keyfunc v3) check our assertions against the live JWKS.
// Usage: verifier JWKS_URL [CASES.jsonl]   (cases from stdin without a file; one JSON result line per case)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"
)

const leeway = 5 * time.Second

type testCase struct {
	ID    string `json:"id"`
	Token string `json:"token"`
	Alg   string `json:"alg"`
	Iss   string `json:"iss"`
	Sub   string `json:"sub"`
	Aud   string `json:"aud"`
}

type result struct {
	OK          bool   `json:"ok"`
	Kid         string `json:"kid,omitempty"`
	Error       string `json:"error,omitempty"`
	Unsupported bool   `json:"unsupported,omitempty"`
}

// go-jose has no remote JWKS client: fetch once, refetch when a kid is unknown.
type joseKeys struct {
	url string
	set *jose.JSONWebKeySet
}

func (k *joseKeys) fetch() error {
	client := http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Get(k.url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("JWKS answered %d", res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("JWKS rejected: %w", err)
	}
	k.set = &set
	return nil
}

func (k *joseKeys) key(kid string) (*jose.JSONWebKey, error) {
	for attempt := 0; attempt < 2; attempt++ {
		if k.set == nil || attempt == 1 {
			if err := k.fetch(); err != nil {
				return nil, err
			}
		}
		if keys := k.set.Key(kid); len(keys) == 1 {
			return &keys[0], nil
		} else if len(keys) > 1 {
			return nil, fmt.Errorf("kid %q appears %d times", kid, len(keys))
		}
	}
	return nil, fmt.Errorf("no key with kid %q", kid)
}

func verifyGoJose(keys *joseKeys, c testCase) result {
	tok, err := josejwt.ParseSigned(c.Token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(c.Alg)})
	if err != nil {
		return result{Error: err.Error()}
	}
	kid := tok.Headers[0].KeyID
	if kid == "" {
		return result{Error: "no kid"}
	}
	jwk, err := keys.key(kid)
	if err != nil {
		return result{Error: err.Error()}
	}
	if jwk.Use != "sig" || jwk.Algorithm != c.Alg {
		return result{Error: fmt.Sprintf("key %s has use %q alg %q", kid, jwk.Use, jwk.Algorithm)}
	}
	var claims josejwt.Claims
	if err := tok.Claims(jwk.Key, &claims); err != nil {
		return result{Error: err.Error()}
	}
	if claims.Expiry == nil || claims.IssuedAt == nil {
		return result{Error: "exp and iat are required"}
	}
	if len(claims.Audience) != 1 {
		return result{Error: "aud must be one value"}
	}
	err = claims.ValidateWithLeeway(josejwt.Expected{Issuer: c.Iss, Subject: c.Sub, AnyAudience: josejwt.Audience{c.Aud}}, leeway)
	if err != nil {
		return result{Error: err.Error()}
	}
	return result{OK: true, Kid: kid}
}

func verifyGolangJwt(kf keyfunc.Keyfunc, c testCase) result {
	var kid string
	keyFunc := func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		return kf.Keyfunc(t)
	}
	_, err := jwt.Parse(c.Token, keyFunc,
		jwt.WithValidMethods([]string{c.Alg}),
		jwt.WithIssuer(c.Iss), jwt.WithSubject(c.Sub), jwt.WithAudience(c.Aud),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(leeway))
	if err != nil {
		return result{Error: err.Error()}
	}
	return result{OK: true, Kid: kid}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: verifier JWKS_URL [CASES.jsonl]")
		os.Exit(2)
	}
	url := os.Args[1]
	input := os.Stdin
	if len(os.Args) > 2 {
		f, err := os.Open(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer f.Close()
		input = f
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// keyfunc's defaults: hourly refresh, unknown kid refetch rate-limited to one per 5 minutes.
	kf, err := keyfunc.NewDefaultCtx(ctx, []string{url})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	keys := &joseKeys{url: url}
	out := json.NewEncoder(os.Stdout)
	scanner := bufio.NewScanner(input)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		if len(scanner.Bytes()) == 0 {
			continue
		}
		var c testCase
		if err := json.Unmarshal(scanner.Bytes(), &c); err != nil {
			fmt.Fprintln(os.Stderr, "bad case:", err)
			os.Exit(2)
		}
		results := map[string]result{"go-jose": verifyGoJose(keys, c), "golang-jwt": verifyGolangJwt(kf, c)}
		if err := out.Encode(map[string]any{"id": c.ID, "results": results}); err != nil {
			os.Exit(2)
		}
	}
	if err := scanner.Err(); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
