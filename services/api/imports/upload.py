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


class _FilePart:
    """Callbacks of the multipart parser: collects the bytes of the part named `file`."""

    def __init__(self) -> None:
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.in_file = False
        self.found = False
        self.data: list[bytes] = []

    def on_part_begin(self) -> None:
        self.headers = {}
        self.in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.in_file = options.get(b"name") == b"file" and not self.found
        self.found |= self.in_file

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.data.append(data[start:end])

    def on_part_end(self) -> None:
        self.in_file = False


async def _multipart_file(request: Request, boundary: bytes) -> AsyncIterator[bytes]:
    part = _FilePart()
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": part.on_part_begin,
            "on_header_field": part.on_header_field,
            "on_header_value": part.on_header_value,
            "on_header_end": part.on_header_end,
            "on_headers_finished": part.on_headers_finished,
            "on_part_data": part.on_part_data,
            "on_part_end": part.on_part_end,
        },
    )
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except Exception as exc:  # python-multipart raises its own error types
            raise Unprocessable(f"the multipart body cannot be read: {exc}") from None
        # What this chunk carried of the file, then on: memory stays at one chunk.
        for data in part.data:
            yield data
        part.data.clear()
    try:
        parser.finalize()
    except Exception as exc:
        raise Unprocessable(f"the multipart body cannot be read: {exc}") from None
    if not part.found:
        raise Unprocessable("the multipart body has no field named 'file'")
