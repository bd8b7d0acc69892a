"""The uploaded file as a stream of byte chunks: a `text/csv` body as it is, or the `file`
field of a `multipart/form-data` body, parsed as it arrives (nothing is spooled)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from services.api.errors import ApiError, Unprocessable

CSV_MEDIA_TYPES = (b"text/csv", b"application/csv", b"text/plain")


class UnsupportedMediaType(ApiError):
    def __init__(self, media_type: str) -> None:
        super().__init__(
            415,
            f"send the CSV as text/csv or as the field 'file' of multipart/form-data,"
            f" not {media_type or 'no content type'}",
        )


def upload_chunks(request: Request) -> AsyncIterator[bytes]:
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type in CSV_MEDIA_TYPES:
        return _body(request)
    if media_type == b"multipart/form-data" and options.get(b"boundary"):
        return _multipart_file(request, options[b"boundary"])
    raise UnsupportedMediaType(media_type.decode("latin-1"))


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


MAX_FIELD_BYTES = 4096  # a form field beside the file (a token, a choice), not a file


class _Parts:
    """Callbacks of the multipart parser: the small fields before the part named `file`, then
    that part's bytes (a chunk's worth at a time)."""

    def __init__(self) -> None:
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: bytes | None = None
        self.value = bytearray()
        self.fields: dict[str, str] = {}
        self.in_file = False
        self.found = False
        self.data: list[bytes] = []

    def on_part_begin(self) -> None:
        self.headers = {}
        self.in_file = False
        self.name = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = options.get(b"name")
        self.in_file = self.name == b"file" and not self.found
        self.found |= self.in_file
        self.value.clear()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.data.append(data[start:end])
        elif not self.found and self.name is not None:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD_BYTES:
                raise ValueError(f"the field {self.name.decode('latin-1')!r} is too long")

    def on_part_end(self) -> None:
        if not self.in_file and not self.found and self.name is not None:
            self.fields[self.name.decode("latin-1")] = self.value.decode("utf-8", "replace")
        self.in_file = False


class MultipartUpload:
    """A multipart/form-data body read as it arrives, nothing spooled: `fields()` reads up to
    the part named `file` and returns the fields before it (a form sends them in page order),
    `chunks()` then the file's bytes."""

    def __init__(self, request: Request, boundary: bytes) -> None:
        self._stream = request.stream()
        self._parts = _Parts()
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._parts.on_part_begin,
                "on_header_field": self._parts.on_header_field,
                "on_header_value": self._parts.on_header_value,
                "on_header_end": self._parts.on_header_end,
                "on_headers_finished": self._parts.on_headers_finished,
                "on_part_data": self._parts.on_part_data,
                "on_part_end": self._parts.on_part_end,
            },
        )

    async def _read(self) -> bool:
        """Parses the next chunk of the body; False at its end."""
        if self._ended:
            return False
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._ended = True
            try:
                self._parser.finalize()
            except Exception as exc:
                raise Unprocessable(f"the multipart body cannot be read: {exc}") from None
            return False
        try:
            self._parser.write(chunk)
        except Exception as exc:  # python-multipart raises its own error types
            raise Unprocessable(f"the multipart body cannot be read: {exc}") from None
        return True

    async def fields(self) -> dict[str, str]:
        while not self._parts.found and await self._read():
            pass
        return self._parts.fields

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            # What the last chunk carried of the file, then on: memory stays at one chunk.
            for data in self._parts.data:
                yield data
            self._parts.data.clear()
            if not await self._read():
                break
        if not self._parts.found:
            raise Unprocessable("the multipart body has no field named 'file'")


def multipart_upload(request: Request) -> MultipartUpload | None:
    """The body as a `MultipartUpload`, or None when it is not multipart/form-data."""
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type == b"multipart/form-data" and options.get(b"boundary"):
        return MultipartUpload(request, options[b"boundary"])
    return None


def _multipart_file(request: Request, boundary: bytes) -> AsyncIterator[bytes]:
    return MultipartUpload(request, boundary).chunks()
