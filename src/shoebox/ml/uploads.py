"""Multipart image batches read straight off the request stream, within explicit limits.

Starlette's form parser writes every file part into a SpooledTemporaryFile and the endpoint
reads it back; for a batch of 25 MB RAW originals that cost about as much as the encoder. Here
python-multipart's streaming parser hands over slices of the received chunks; a file part keeps
them as zero-copy views and joins them once when it ends: one copy per file, no temp files.

Limits, per request:
- more than `max_files` file parts: 413 ERR_VALIDATION as soon as the next one starts (the
  rest of the body is not read);
- a file part over `max_file_bytes`: that item fails ERR_IMAGE_TOO_LARGE (its bytes are counted
  and dropped, not kept), the batch goes on — a bad file fails its own item;
- a body over `max_body_bytes`: 413 ERR_VALIDATION, before reading anything when Content-Length
  says so, else as soon as the count passes it;
- form fields: at most MAX_FIELDS of them, each at most MAX_FIELD_BYTES (413 beyond).
No boundary, another content type, garbage, or a body that ends before its closing boundary:
422 ERR_VALIDATION.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from shoebox.protocol import ErrorCode, ShoeboxError

# Non-file form fields in one request, and the size of each (unique_ids of 512 SHA-256 hex
# digests is about 36 KB).
MAX_FIELDS = 64
MAX_FIELD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadLimits:
    max_files: int
    max_file_bytes: int
    max_body_bytes: int


@dataclass
class UploadedFile:
    filename: str
    # None when the part was larger than the limit (its bytes were not kept).
    data: bytes | None
    size: int

    def too_large(self, limit: int) -> ShoeboxError:
        return ShoeboxError(
            ErrorCode.IMAGE_TOO_LARGE, f"file of {self.size} bytes exceeds the {limit}-byte upload limit"
        )


@dataclass
class MultipartForm:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _invalid(message: str) -> ShoeboxError:
    return ShoeboxError(ErrorCode.VALIDATION, message)


def _too_big(message: str, **detail: int) -> ShoeboxError:
    return ShoeboxError(ErrorCode.VALIDATION, message, status=413, **detail)


def too_many_files(limit: int) -> ShoeboxError:
    return _too_big(
        f"too many files in one request: more than {limit} (SHOEBOX_MAX_BATCH_FILES)", max_batch_files=limit
    )


class _FormCollector:
    """The parser's callbacks: headers → the part's name and filename, data → the part's chunks."""

    def __init__(self, file_field: str, limits: UploadLimits) -> None:
        self.file_field = file_field
        self.limits = limits
        self.form = MultipartForm()
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._filename: str | None = None
        self._chunks: list[bytes | memoryview] = []
        self._size = 0
        self._keep = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""
        self._chunks = []
        self._size = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise _invalid('a multipart part has no Content-Disposition "name"')
        self._name = _decode(options[b"name"])
        filename = options.get(b"filename")
        self._filename = _decode(filename) if filename is not None else None
        if self._name == self.file_field:
            if self._filename is None:
                raise _invalid(f"each `{self.file_field}` part must be a file (a part with a filename)")
            if len(self.form.files) >= self.limits.max_files:
                raise too_many_files(self.limits.max_files)
            self._keep = True
        elif self._filename is None:
            if len(self.form.fields) >= MAX_FIELDS:
                raise _too_big(f"more than {MAX_FIELDS} form fields in one request")
            self._keep = True
        else:
            self._keep = False  # a file under another name: not ours, like any unknown field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if not self._keep:
            return
        limit = self.limits.max_file_bytes if self._filename is not None else MAX_FIELD_BYTES
        if self._size > limit:
            self._keep = False
            self._chunks = []
            if self._filename is None:
                raise _too_big(f"form field {self._name!r} exceeds {MAX_FIELD_BYTES} bytes")
            return
        # A view, not a slice: the chunk is immutable and the join at the part's end is the one copy.
        self._chunks.append(data if start == 0 and end == len(data) else memoryview(data)[start:end])

    def _part_end(self) -> None:
        if self._name == self.file_field and self._filename is not None:
            data = b"".join(self._chunks) if self._keep else None
            self.form.files.append(UploadedFile(self._filename, data, self._size))
        elif self._keep:
            self.form.fields[self._name] = _decode(b"".join(self._chunks))
        self._chunks = []

    def _end(self) -> None:
        self.ended = True


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise _invalid(f"expected a multipart/form-data body, got {content_type.decode('latin-1') or 'none'}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise _invalid("the multipart/form-data Content-Type has no boundary")
    return boundary


def check_declared_length(request: Request, limits: UploadLimits) -> None:
    """413 before reading anything when Content-Length already says the body is too big."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _body_too_big(limits)


def _body_too_big(limits: UploadLimits) -> ShoeboxError:
    return _too_big(
        f"request body exceeds {limits.max_body_bytes} bytes (SHOEBOX_MAX_REQUEST_BYTES)",
        max_request_bytes=limits.max_body_bytes,
    )


async def read_multipart(request: Request, file_field: str, limits: UploadLimits) -> MultipartForm:
    """Parse the request body as it arrives: the file parts named `file_field` and the form fields."""
    boundary = _boundary(request)
    check_declared_length(request, limits)
    collector = _FormCollector(file_field, limits)
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    except (FormParserError, ValueError) as exc:
        raise _invalid(f"bad multipart boundary: {exc}") from exc
    received = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise _body_too_big(limits)
            # The views kept of it rely on the chunk never changing.
            parser.write(chunk if isinstance(chunk, bytes) else bytes(chunk))
    except FormParserError as exc:
        raise _invalid(f"malformed multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        raise ShoeboxError(ErrorCode.CANCELLED, "the client disconnected during the upload") from exc
    if not collector.ended:
        raise _invalid("the multipart body ends before its closing boundary")
    return collector.form
