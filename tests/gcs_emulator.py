"""An offline Google Cloud Storage for tests: gs:// paths served on 127.0.0.1.

  python tests/gcs_emulator.py BUCKET     # prints {"port", "proxy_port", "ca"} and serves
                                          # until its stdin closes

Two pieces, in their own process (TensorFlow's GCS client holds the GIL during
some requests, so a server in the same process would deadlock it):
- gcp-storage-emulator, the JSON/XML storage API in memory, with what the
  clients here need and it lacks: uploads with an empty body (directory markers),
  the bucket-layout query of TensorFlow's renames, generation preconditions and
  headers (tensorstore's atomic writes of orbax's OCDBT manifests), no Nagle delay;
- an HTTPS proxy for TensorFlow, whose GCS client has no endpoint setting but
  follows HTTPS_PROXY: it answers CONNECTs to *.googleapis.com with a
  certificate from a throw-away authority (given to TensorFlow's curl through
  CURL_CA_BUNDLE) and passes the decrypted requests to the emulator.
`client_environment` gives every client (TensorFlow, tensorstore, etils) its
variables.
"""

from __future__ import annotations

import datetime
import http.client
import json
import logging
import os
import socketserver
import ssl
import sys
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler


def client_environment(port: int, proxy_port: int, ca: str, sdk_dir: str) -> dict:
  """Environment variables for processes that use gs:// paths on this emulator."""
  return {
      'HTTPS_PROXY': f'http://127.0.0.1:{proxy_port}',   # TensorFlow's curl -> the proxy
      'CURL_CA_BUNDLE': ca,
      'NO_PROXY': '127.0.0.1,localhost',
      'NO_GCE_CHECK': 'true',                              # no metadata-server probes
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test',             # TF and tensorstore: a fixed token
      'CLOUDSDK_CONFIG': sdk_dir,                          # never a developer's credentials
      'GOOGLE_APPLICATION_CREDENTIALS': '',
      'TENSORSTORE_GCS_HTTP_URL': f'http://127.0.0.1:{port}',   # orbax's arrays, directly
      'STORAGE_EMULATOR_HOST': f'http://127.0.0.1:{port}',
      'GCS_STAT_CACHE_MAX_AGE': '0',
  }


# --- The emulator, completed for these clients.

def _patch_emulator():
  from gcp_storage_emulator import server
  from gcp_storage_emulator.exceptions import NotFound
  from gcp_storage_emulator.handlers import objects

  server.RequestHandler.disable_nagle_algorithm = True

  original_media_upload = objects._media_upload   # noqa: SLF001

  def media_upload(request, response, storage):
    if request.data is None:                        # TensorFlow's empty directory markers
      request._data = b''                           # noqa: SLF001
    return original_media_upload(request, response, storage)

  objects._media_upload = media_upload              # noqa: SLF001

  def storage_layout(request, response, storage, *args, **kwargs):
    bucket = request.params['bucket_name']
    if bucket not in storage.buckets:
      response.status = HTTPStatus.NOT_FOUND
      return
    response.json({'kind': 'storage#storageLayout', 'bucket': bucket,
                   'hierarchicalNamespace': {'enabled': False}})

  def generation(storage, bucket, name):
    try:
      return int(storage.get_file_obj(bucket, name)['generation'])
    except NotFound:
      return None

  def object_name(request):
    params, query, data = request.params or {}, request.query, request.data
    if params.get('object_id'):
      return params['object_id']
    if 'name' in query:
      return query['name'][0]
    if isinstance(data, dict):
      return (data.get('meta') or data).get('name')
    return None

  def with_generations(handler, reads):
    """Honours ifGenerationMatch / ifGenerationNotMatch and answers x-goog-generation."""

    def wrapped(request, response, storage, *args, **kwargs):
      query, bucket, name = request.query, request.params.get('bucket_name'), object_name(request)
      if bucket and name and 'upload_id' not in query:
        current = generation(storage, bucket, name)
        if not (reads and current is None):
          if 'ifGenerationMatch' in query and (current or 0) != int(query['ifGenerationMatch'][0]):
            response.status = HTTPStatus.PRECONDITION_FAILED
            return response.json({'error': {'code': 412, 'message': 'conditionNotMet'}})
          if 'ifGenerationNotMatch' in query and \
              (current or 0) == int(query['ifGenerationNotMatch'][0]):
            response.status = HTTPStatus.NOT_MODIFIED if reads else HTTPStatus.PRECONDITION_FAILED
            return None
      handler(request, response, storage, *args, **kwargs)
      if reads and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT) and bucket:
        current = generation(storage, bucket, name) if name else None
        if current is not None:
          response['x-goog-generation'] = str(current)
          response['x-goog-metageneration'] = '1'
      return None

    return wrapped

  reads, writes = {objects.get, objects.download}, {objects.insert, objects.delete,
                                                    objects.xml_upload}
  for _, methods in server.HANDLERS:
    for method, handler in list(methods.items()):
      if handler in reads | writes:
        methods[method] = with_generations(handler, handler in reads)
  layout = (r'^/storage/v1/b/(?P<bucket_name>[-.\w]+)/storageLayout$', {'GET': storage_layout})
  server.HANDLERS = (layout,) + tuple(server.HANDLERS)


# --- The proxy for TensorFlow.

def _certificates(directory: str) -> tuple[str, str, str]:
  """(authority, server certificate chain, server key) files for *.googleapis.com."""
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

  now = datetime.datetime.now(datetime.timezone.utc)
  valid = dict(not_valid_before=now - datetime.timedelta(days=1),
               not_valid_after=now + datetime.timedelta(days=2))

  def build(subject, issuer, public_key):
    builder = x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
    builder = builder.public_key(public_key).serial_number(x509.random_serial_number())
    return builder.not_valid_before(valid['not_valid_before']).not_valid_after(
        valid['not_valid_after'])

  authority_key = ec.generate_private_key(ec.SECP256R1())
  authority_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'bn_repro test CA')])
  authority = build(authority_name, authority_name, authority_key.public_key()).add_extension(
      x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
      x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
      critical=True).add_extension(
      x509.SubjectKeyIdentifier.from_public_key(authority_key.public_key()),
      critical=False).sign(authority_key, hashes.SHA256())
  key = ec.generate_private_key(ec.SECP256R1())
  hosts = ['www.googleapis.com', 'storage.googleapis.com', '*.googleapis.com']
  certificate = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]),
                      authority_name, key.public_key()).add_extension(
      x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False).add_extension(
      x509.BasicConstraints(ca=False, path_length=None), critical=True).add_extension(
      x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False).add_extension(
      x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()),
      critical=False).sign(authority_key, hashes.SHA256())
  pem = serialization.Encoding.PEM
  paths = [os.path.join(directory, name) for name in ('ca.pem', 'server.pem', 'server.key')]
  with open(paths[0], 'wb') as f:
    f.write(authority.public_bytes(pem))
  with open(paths[1], 'wb') as f:
    f.write(certificate.public_bytes(pem) + authority.public_bytes(pem))
  with open(paths[2], 'wb') as f:
    f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
  return tuple(paths)


_HOP_BY_HOP = {'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te',
               'trailer', 'transfer-encoding', 'upgrade', 'expect', 'content-length'}


class _ProxyHandler(BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  disable_nagle_algorithm = True

  def log_message(self, *args):
    pass

  def do_CONNECT(self):  # noqa: N802
    if not self.path.split(':')[0].endswith('googleapis.com'):
      self.send_error(HTTPStatus.FORBIDDEN)
      return
    self.send_response(HTTPStatus.OK, 'Connection established')
    self.end_headers()
    self.wfile.flush()
    secure = self.server.tls.wrap_socket(self.connection, server_side=True)
    self.connection = self.request = secure
    self.rfile, self.wfile = secure.makefile('rb', -1), secure.makefile('wb', 0)
    self.close_connection = False   # the keep-alive loop goes on, now inside TLS

  def _body(self) -> bytes | None:
    if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
      data = b''
      while (size := int(self.rfile.readline().split(b';')[0], 16)):
        data += self.rfile.read(size)
        self.rfile.readline()
      while self.rfile.readline() not in (b'\r\n', b'\n', b''):
        pass
      return data
    length = int(self.headers.get('Content-Length') or 0)
    return self.rfile.read(length) if length else None

  def _forward(self):
    body = self._body()
    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
    if body is not None:
      headers['Content-Length'] = str(len(body))
    try:
      upstream = http.client.HTTPConnection('127.0.0.1', self.server.emulator_port, timeout=60)
      upstream.request(self.command, self.path, body=body, headers=headers)
      answer = upstream.getresponse()
      data = answer.read()
      upstream.close()
    except (OSError, http.client.HTTPException):
      self.send_response(HTTPStatus.BAD_GATEWAY)
      self.send_header('Content-Length', '0')
      self.end_headers()
      return
    self.send_response(answer.status, answer.reason)
    for key, value in answer.getheaders():
      if key.lower() not in _HOP_BY_HOP:
        self.send_header(key, value.replace('http://', 'https://', 1)
                         if key.lower() == 'location' else value)
    self.send_header('Content-Length', str(0 if self.command == 'HEAD' else len(data)))
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(data)

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward  # noqa: N815


class _ProxyServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
  daemon_threads = True
  allow_reuse_address = True


def serve(bucket: str) -> None:
  logging.getLogger('gcp_storage_emulator').setLevel(logging.CRITICAL)
  _patch_emulator()
  from gcp_storage_emulator.server import create_server
  emulator = create_server('127.0.0.1', 0, in_memory=True, default_bucket=bucket)
  emulator.start()
  port = emulator._api._httpd.server_port   # noqa: SLF001 (the port it was given)
  directory = tempfile.mkdtemp(prefix='gcs_emulator_')
  ca, chain, key = _certificates(directory)
  proxy = _ProxyServer(('127.0.0.1', 0), _ProxyHandler)
  proxy.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
  proxy.tls.load_cert_chain(chain, key)
  proxy.emulator_port = port
  threading.Thread(target=proxy.serve_forever, daemon=True).start()
  print(json.dumps({'port': port, 'proxy_port': proxy.server_address[1], 'ca': ca}), flush=True)
  sys.stdin.read()                  # until the test closes stdin (or ends)
  proxy.shutdown()
  emulator.stop()


if __name__ == '__main__':
  serve(sys.argv[1] if len(sys.argv) > 1 else 'bucket')
