"""moto's server, with each request handled whole before the next one starts.

Real DynamoDB applies a conditional write atomically; moto's threaded server checks the
condition and writes without a lock, so two concurrent `attribute_not_exists` puts can both
win. The tests rely on DynamoDB's guarantee (one dispatch claim, one reply claim), so this
wrapper serialises DynamoDB requests with one lock. Other services stay concurrent (an SQS
long poll must not hold up everything else).

Usage: python moto_server.py -H 127.0.0.1 -p PORT   (the same flags as `moto_server`)
"""

import sys
import threading

import moto.server as server

_lock = threading.Lock()
_run_simple = server.run_simple


def _serialised(app):
    def wrapped(environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            return app(environ, start_response)
        with _lock:
            # Materialise the body inside the lock: the write happens while it is built.
            return list(app(environ, start_response))

    return wrapped


def run_simple(host, port, app, **kwargs):
    return _run_simple(host, port, _serialised(app), **kwargs)


server.run_simple = run_simple

if __name__ == "__main__":
    server.main(sys.argv[1:])
