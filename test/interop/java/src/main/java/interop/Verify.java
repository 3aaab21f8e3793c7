// Interop verifier: nimbus-jose-jwt checks our assertions against the live JWKS, with JWKSourceBuilder's defaults
// (500 ms connect/read timeouts, 50 KB size limit, 5 min cache, rate-limited refetch on an unknown kid).
// Usage: java -jar target/verifier.jar JWKS_URL [CASES.jsonl]   (stdin without a file; one JSON result line per case)
package interop;

import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.jwk.source.JWKSource;
import com.nimbusds.jose.jwk.source.JWKSourceBuilder;
import com.nimbusds.jose.proc.JWSVerificationKeySelector;
import com.nimbusds.jose.proc.SecurityContext;
import com.nimbusds.jose.util.JSONObjectUtils;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.SignedJWT;
import com.nimbusds.jwt.proc.DefaultJWTClaimsVerifier;
import com.nimbusds.jwt.proc.DefaultJWTProcessor;
import java.io.BufferedReader;
import java.io.FileReader;
import java.io.InputStreamReader;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

public final class Verify {
  private static final int LEEWAY_SECONDS = 5;

  static Map<String, Object> verify(JWKSource<SecurityContext> source, Map<String, Object> c) {
    Map<String, Object> result = new LinkedHashMap<>();
    try {
      String token = (String) c.get("token");
      DefaultJWTProcessor<SecurityContext> processor = new DefaultJWTProcessor<>();
      processor.setJWSKeySelector(new JWSVerificationKeySelector<>(JWSAlgorithm.parse((String) c.get("alg")), source));
      JWTClaimsSet exact = new JWTClaimsSet.Builder().issuer((String) c.get("iss")).subject((String) c.get("sub")).build();
      DefaultJWTClaimsVerifier<SecurityContext> claims =
          new DefaultJWTClaimsVerifier<>((String) c.get("aud"), exact, Set.of("exp", "iat"));
      claims.setMaxClockSkew(LEEWAY_SECONDS);
      processor.setJWTClaimsSetVerifier(claims);
      JWTClaimsSet verified = processor.process(token, null);
      if (verified.getIssueTime().after(new Date(System.currentTimeMillis() + LEEWAY_SECONDS * 1000L))) {
        throw new IllegalStateException("iat is in the future");
      }
      result.put("ok", true);
      result.put("kid", SignedJWT.parse(token).getHeader().getKeyID());
    } catch (Exception e) {
      result.put("ok", false);
      result.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
      // JWSVerificationKeySelector turns JWKs into java.security keys, which nimbus does not do for OKP (Ed25519)
      // keys: an EdDSA token never finds a key, so DefaultJWTProcessor cannot verify EdDSA at all. Should a later
      // version manage it, valid EdDSA tokens pass and the driver notices.
      if ("EdDSA".equals(c.get("alg"))) result.put("unsupported", true);
    }
    return result;
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: verifier JWKS_URL [CASES.jsonl]");
      System.exit(2);
    }
    JWKSource<SecurityContext> source = JWKSourceBuilder.create(new URL(args[0])).build();
    try (BufferedReader in = args.length > 1
        ? new BufferedReader(new FileReader(args[1], StandardCharsets.UTF_8))
        : new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      for (String line; (line = in.readLine()) != null; ) {
        if (line.isBlank()) continue;
        Map<String, Object> c = JSONObjectUtils.parse(line);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("id", c.get("id"));
        out.put("results", Map.of("nimbus", verify(source, c)));
        System.out.println(JSONObjectUtils.toJSONString(out));
        System.out.flush();
      }
    }
    System.exit(0);
  }
}
