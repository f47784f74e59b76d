#!/usr/bin/env python3
"""A stand-in for a failing Ollama server, for the one fault a real Ollama cannot be made to
produce on demand: an error line in the middle of a streamed /api/chat answer (what Ollama sends
when the runner dies mid-generation). It records each request body so the test can check that
the client always sends options.num_ctx. Prints {"port": N} when ready; serves until killed."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log_path = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(log_path, "a") as f:
            f.write(json.dumps({"path": self.path, "body": json.loads(body)}) + "\n")
        if self.path != "/api/chat":
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        model = json.loads(body).get("model", "")
        for piece in ["The spare ", "key is "]:
            self.wfile.write((json.dumps({"model": model, "message": {"role": "assistant", "content": piece}, "done": False}) + "\n").encode())
            self.wfile.flush()
        self.wfile.write((json.dumps({"error": "llama runner process has terminated: signal: killed"}) + "\n").encode())
        self.wfile.flush()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
