#!/usr/bin/python3
"""A real SMTP server (aiosmtpd) on 127.0.0.1 for lifeline's tests (internal/smtptest).

It listens on a port the kernel picks (or --port, to come back on the port
of a server that was stopped) and prints "PORT <n>" on stdout, then
serves until stdin is closed (the test ends) or it is killed. Every message
it accepts is written to OUTDIR/NNNN.json (envelope, raw data in base64,
whether TLS was in use, the login); every AUTH attempt is appended to
OUTDIR/auth.jsonl. Recipients whose local part starts with "refused" get
550, with "later" get 451.

Options: --cert/--key enable TLS (STARTTLS, required before anything else;
with --implicit, TLS from the first byte as on port 465). --user/--password
enable AUTH (PLAIN and LOGIN; --no-plain offers LOGIN only). --auth-in-clear
offers AUTH on a connection that is not encrypted (a careless server, for
the test that the client still refuses).
"""
import argparse
import asyncio
import base64
import json
import os
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def encrypted(server):
    """Whether the connection is TLS: after STARTTLS or from the start."""
    return server.transport.get_extra_info("ssl_object") is not None


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.rename(tmp, path)


class Handler:
    def __init__(self, outdir):
        self.outdir = outdir
        # A server started again on the same outdir goes on numbering.
        self.count = len([n for n in os.listdir(outdir) if n[0].isdigit() and n.endswith(".json")])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("refused"):
            return "550 5.1.1 no such user here"
        if local.startswith("later"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        login = session.auth_data
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": base64.b64encode(envelope.original_content).decode(),
            "tls": encrypted(server),
            "login": login.login.decode() if isinstance(login, LoginPassword) else None,
        }
        write_atomic(os.path.join(self.outdir, "%04d.json" % self.count), json.dumps(rec))
        return "250 2.0.0 queued"


def authenticator(outdir, user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login == user.encode()
              and auth_data.password == password.encode())
        with open(os.path.join(outdir, "auth.jsonl"), "a") as f:
            f.write(json.dumps({"mechanism": mechanism, "ok": ok,
                                "tls": encrypted(server)}) + "\n")
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    return check


async def main():
    # --implicit and --auth-in-clear offer AUTH without STARTTLS on purpose.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    p = argparse.ArgumentParser()
    p.add_argument("--outdir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--implicit", action="store_true")
    p.add_argument("--user")
    p.add_argument("--password", default="")
    p.add_argument("--no-plain", action="store_true")
    p.add_argument("--auth-in-clear", action="store_true")
    args = p.parse_args()

    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    loop = asyncio.get_running_loop()
    handler = Handler(args.outdir)
    auth = authenticator(args.outdir, args.user, args.password) if args.user else None

    def factory():
        starttls = tls if (tls and not args.implicit) else None
        return SMTP(handler,
                    hostname="lifeline-test",
                    tls_context=starttls,
                    require_starttls=starttls is not None,
                    auth_required=auth is not None,
                    auth_require_tls=not (args.implicit or args.auth_in_clear),
                    auth_exclude_mechanism=["PLAIN"] if args.no_plain else None,
                    authenticator=auth,
                    timeout=30,
                    loop=loop)

    server = await loop.create_server(factory, "127.0.0.1", args.port,
                                      ssl=tls if args.implicit else None)
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes stdin
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
