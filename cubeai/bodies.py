"""Request bodies as the client sent them: of unknown length, or cut short.

Django's ASGI handler spools the whole body, then builds the request from the
`Content-Length` header, 0 when there is none. A body sent with `Transfer-Encoding: chunked`
(the official Node SDK streams file uploads this way) has no such header, so Django's
multipart parser read nothing from it. This handler builds every request, for the API and
the pages alike, with the length of the body it actually received. Size limits are applied
while the body streams in, before this point (`inference.limits.BodyLimit`).

Django's multipart parser also accepts a body whose closing boundary never came, keeping
its last file cut short; the request here refuses it as malformed, so a client that stopped
early never gets a truncated upload processed.
"""

import os

from django.core.handlers import asgi
from django.http.multipartparser import MultiPartParserError


class ClosingBoundaryWatch:
    """A body stream that notes whether the multipart closing delimiter went by."""

    def __init__(self, stream, boundary: bytes) -> None:
        self._stream = stream
        self._delimiter = b"--" + boundary + b"--"
        self._window = b""
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        if not self.closed:
            seen = self._window + chunk
            self.closed = self._delimiter in seen
            self._window = seen[-(len(self._delimiter) - 1) :]
        return chunk


class ASGIRequest(asgi.ASGIRequest):
    """Django's ASGI request, refusing a multipart body that ends before its last boundary."""

    def parse_file_upload(self, META, post_data):
        boundary = self.content_params.get("boundary", "").encode("ascii", "replace")
        watch = ClosingBoundaryWatch(post_data, boundary)
        post, files = super().parse_file_upload(META, watch)
        if not watch.closed:
            for _, uploads in files.lists():
                for upload in uploads:
                    upload.close()
            raise MultiPartParserError("The multipart body ended before its closing boundary.")
        return post, files


class ASGIHandler(asgi.ASGIHandler):
    """Django's ASGI handler, building each request with the length of the body received."""

    request_class = ASGIRequest

    def create_request(self, scope, body_file):
        request, error_response = super().create_request(scope, body_file)
        if request is not None and "CONTENT_LENGTH" not in request.META:
            request.META["CONTENT_LENGTH"] = str(body_file.seek(0, os.SEEK_END))
            body_file.seek(0)
        return request, error_response
