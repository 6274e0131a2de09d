#!/usr/bin/env python3
"""Writes one line per buyer for the wrk scripts: `<user> <jwt> <ticket>`.

The JWT is what an identity provider would issue (HS256 with FLASHSALE_JWT_SECRET, the dev
secret by default); the ticket is the server's signed queue ticket for that buyer's place
(`number`), built exactly as flashsale-queue's Signer does: base64url(JSON) "." base64url(HMAC),
keyed by HMAC(secret, "flashsale:queue-ticket"). Standard library only.

    mint.py SALE_ID COUNT OUT [--first N] [--no-ticket]
"""
import base64, hashlib, hmac, json, os, sys, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sale, count, out = int(args[0]), int(args[1]), args[2]
    first = int(sys.argv[sys.argv.index("--first") + 1]) if "--first" in sys.argv else 1
    tickets = "--no-ticket" not in sys.argv
    secret = os.environ.get("FLASHSALE_JWT_SECRET", "dev-jwt-secret-do-not-use-in-production").encode()
    ticket_key = hmac.new(secret, b"flashsale:queue-ticket", hashlib.sha256).digest()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    exp = int(time.time()) + 3600
    with open(out, "w") as f:
        for i in range(first, first + count):
            user = f"bench-{i}"
            payload = b64(json.dumps({"sub": user, "exp": exp}, separators=(",", ":")).encode())
            signing_input = f"{header}.{payload}".encode()
            jwt = f"{header}.{payload}.{b64(hmac.new(secret, signing_input, hashlib.sha256).digest())}"
            ticket = "-"
            if tickets:
                body = b64(json.dumps({"user": user, "sale": sale, "batch": 1, "number": i, "admission": None},
                                      separators=(",", ":")).encode())
                ticket = f"{body}.{b64(hmac.new(ticket_key, body.encode(), hashlib.sha256).digest())}"
            f.write(f"{user} {jwt} {ticket}\n")

if __name__ == "__main__":
    main()
