"""Verify one signed request with code status-push did not write.

Reads {"scheme", "secret", "headers", "body"} as JSON on stdin (body as text) and exits 0
when the signature is valid, 1 with the reason otherwise. Standard Webhooks requests are
checked by the `standardwebhooks` package; GitHub ones by Python's own hmac, as GitHub's
documentation shows.
"""

import hashlib
import hmac
import json
import sys


def main() -> int:
    request = json.load(sys.stdin)
    body = request["body"].encode()
    headers = {k.lower(): v for k, v in request["headers"].items()}
    if request["scheme"] == "standard-webhooks":
        from standardwebhooks.webhooks import Webhook

        Webhook(request["secret"]).verify(body, headers)
    else:
        expected = "sha256=" + hmac.new(request["secret"].encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-hub-signature-256", "")):
            print("bad X-Hub-Signature-256", file=sys.stderr)
            return 1
    print("valid")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # the verifier's own verdict, printed for the test
        print(f"invalid: {error!r}", file=sys.stderr)
        sys.exit(1)
