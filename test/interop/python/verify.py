"""Interop verifier: PyJWT (PyJWKClient) and jwcrypto check our assertions against the live JWKS.

Usage: verify.py JWKS_URL [CASES.jsonl]   (cases from stdin without a file; one JSON result line per case)
"""

import json
import sys
import time
import urllib.request

import jwt
from jwcrypto import jwk as cjwk
from jwcrypto import jwt as cjwt

LEEWAY = 5


def pyjwt_verify(client, case):
    key = client.get_signing_key_from_jwt(case["token"])  # defaults: 300 s cache, 30 s unknown-kid cooldown
    jwt.decode(
        case["token"],
        key,
        algorithms=[case["alg"]],
        audience=case["aud"],
        issuer=case["iss"],
        subject=case["sub"],
        leeway=LEEWAY,
        options={"require": ["exp", "iat", "iss", "sub", "aud"], "strict_aud": True},
    )
    return key.key_id


class JwcryptoKeys:
    """jwcrypto has no remote JWKS client: fetch once, refetch when a kid is unknown."""

    def __init__(self, url):
        self.url = url
        self.keys = None

    def fetch(self):
        with urllib.request.urlopen(self.url, timeout=5) as res:
            self.keys = cjwk.JWKSet.from_json(res.read())

    def get(self, kid):
        if self.keys is None or self.keys.get_key(kid) is None:
            self.fetch()
        key = self.keys.get_key(kid)
        if key is None:
            raise LookupError(f"no key with kid {kid}")
        # The one key, not the set: with a JWKSet jwcrypto reports a bad signature as "Missing Key".
        return key


def jwcrypto_verify(keys, case):
    token = cjwt.JWT(
        algs=[case["alg"]],
        expected_type="JWS",
        strict_serialization=True,
        check_claims={"iss": case["iss"], "sub": case["sub"], "aud": case["aud"], "exp": None, "iat": None},
    )
    token.leeway = LEEWAY  # default 60 s
    token.deserialize(case["token"])  # parse only; validate() checks signature and claims
    kid = token.token.jose_header.get("kid")
    if not kid:
        raise ValueError("no kid")
    token.validate(keys.get(kid))
    claims = json.loads(token.claims)
    if claims["iat"] > time.time() + LEEWAY:
        raise ValueError("iat is in the future")
    if claims["aud"] != case["aud"]:
        raise ValueError("aud must be exactly the expected string")
    return kid


def run(fn, *args):
    try:
        return {"ok": True, "kid": fn(*args)}
    except Exception as err:  # every failure is a rejection, reported with its type
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}


def main():
    if len(sys.argv) < 2:
        print("usage: verify.py JWKS_URL [CASES.jsonl]", file=sys.stderr)
        sys.exit(2)
    url = sys.argv[1]
    client = jwt.PyJWKClient(url)
    keys = JwcryptoKeys(url)
    with open(sys.argv[2], encoding="utf-8") if len(sys.argv) > 2 else sys.stdin as source:
        for line in source:
            if not line.strip():
                continue
            case = json.loads(line)
            results = {"pyjwt": run(pyjwt_verify, client, case), "jwcrypto": run(jwcrypto_verify, keys, case)}
            print(json.dumps({"id": case["id"], "results": results}), flush=True)


if __name__ == "__main__":
    main()
