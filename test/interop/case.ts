/** One line of the verifier protocol: a token and the claims every verifier must find in it. */
export interface Case {
  id: string;
  token: string;
  alg: string;
  iss: string;
  sub: string;
  aud: string;
}
