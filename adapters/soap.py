"""A small SOAP service (X-Road message protocol v4.0) in front of a CSV registry: ``getPerson`` (I/O).

``GET {base}?wsdl`` serves its WSDL 1.1 (document/literal wrapped, SOAP 1.1; the X-Road header fields are not
described in it, as PR-MESS 2.2 leaves them to the security server). ``POST {base}`` with
``<getPerson><personalCode>..</personalCode></getPerson>`` answers ``getPersonResponse`` with the person's
columns, the request's header fields copied in order (PR-MESS 2.2); an unknown personal code is a SOAP Fault
(``Client.NotFound``, HTTP 500), a malformed request too. XML is read with the gateway's hardened parser.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from lxml import etree

from gateway.adapterapi import AdapterRequest, ServiceAdapter
from gateway.errors import ConfigError, GatewayError
from gateway.xmlsafe import XmlLimits, parse_xml

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://gateway.example/persons"
_LIMITS = XmlLimits(max_bytes=2**20)  # bytes; a getPerson request is a few hundred


def _fault(code: str, message: str) -> web.Response:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP}"><SOAP-ENV:Body>'
        f"<SOAP-ENV:Fault><faultcode>{escape(code)}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    return web.Response(status=500, body=body.encode(), content_type="text/xml", charset="utf-8")


class SoapPersonsAdapter(ServiceAdapter):
    """``getPerson`` over a CSV file (header row): ``key`` is the lookup column (default the first), ``columns``
    those answered (default all)."""

    methods = frozenset({"GET", "POST"})
    openapi_path = None

    def __init__(
        self,
        *,
        name: str,
        path: Path,
        key: str | None = None,
        columns: tuple[str, ...] = (),
        title: str = "",
    ) -> None:
        super().__init__(name=name, title=title or "Population register (SOAP)")
        self.path = path
        self.key = key
        self.columns = columns
        self._rows: dict[str, dict[str, str]] = {}

    async def start(self) -> None:
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            names = tuple(reader.fieldnames or ())
            self.key = self.key or (names[0] if names else None)
            self.columns = self.columns or names
            missing = [c for c in (self.key, *self.columns) if c not in names]
            if missing:
                raise ConfigError(f"adapter {self.name!r}: {self.path} has no column {missing[0]!r}")
            key = self.key
            assert key is not None
            self._rows = {row[key]: row for row in reader}

    def openapi(self) -> dict[str, Any]:
        return {"openapi": "3.1.0", "info": {"title": self.title, "version": "1"}, "paths": {}}

    def wsdl(self, location: str) -> bytes:
        """The service's WSDL, its SOAP address ``location``."""
        fields = "".join(f'<xs:element name="{c}" type="xs:string"/>' for c in self.columns)
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
    xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="{TNS}" name="persons" targetNamespace="{TNS}">
  <wsdl:types>
    <xs:schema targetNamespace="{TNS}" elementFormDefault="qualified">
      <xs:element name="getPerson"><xs:complexType><xs:sequence>
        <xs:element name="personalCode" type="xs:string"/>
      </xs:sequence></xs:complexType></xs:element>
      <xs:element name="getPersonResponse"><xs:complexType><xs:sequence>{fields}</xs:sequence></xs:complexType>
      </xs:element>
    </xs:schema>
  </wsdl:types>
  <wsdl:message name="getPerson"><wsdl:part name="body" element="tns:getPerson"/></wsdl:message>
  <wsdl:message name="getPersonResponse"><wsdl:part name="body" element="tns:getPersonResponse"/></wsdl:message>
  <wsdl:portType name="persons">
    <wsdl:operation name="getPerson">
      <wsdl:input message="tns:getPerson"/><wsdl:output message="tns:getPersonResponse"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="personsBinding" type="tns:persons">
    <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="getPerson">
      <soap:operation soapAction="getPerson"/>
      <wsdl:input><soap:body use="literal"/></wsdl:input><wsdl:output><soap:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="personsService">
    <wsdl:port name="personsPort" binding="tns:personsBinding"><soap:address location="{escape(location)}"/></wsdl:port>
  </wsdl:service>
</wsdl:definitions>
""".encode()

    async def serve(self, request: AdapterRequest) -> web.StreamResponse:
        http = request.http
        if request.method == "GET":
            if "wsdl" not in {k.lower() for k, _ in request.query}:
                return _fault("Client.BadRequest", "GET serves the WSDL only: ask for ?wsdl")
            return web.Response(
                body=self.wsdl(str(http.url.with_query(None))), content_type="text/xml", charset="utf-8"
            )
        data = await http.content.read(_LIMITS.max_bytes + 1)
        try:
            envelope = parse_xml(data, limits=_LIMITS, what="SOAP request")
        except GatewayError as e:
            return _fault(e.xroad_type, e.message)
        header = envelope.find(f"{{{NS_SOAP}}}Header")
        body = envelope.find(f"{{{NS_SOAP}}}Body")
        call = body.find(f"{{{TNS}}}getPerson") if body is not None else None
        code = call.findtext(f"{{{TNS}}}personalCode") if call is not None else None
        if not code:
            return _fault("Client.InvalidBody", "the body must be getPerson with a personalCode")
        row = self._rows.get(code.strip())
        if row is None:
            return _fault("Client.NotFound", f"no person with personal code {code.strip()[:40]!r}")
        fields = (
            ""
            if header is None
            else "".join(
                etree.tostring(f, encoding="unicode", with_tail=False) for f in header if isinstance(f.tag, str)
            )
        )
        columns = "".join(f"<p:{c}>{escape(row.get(c, ''))}</p:{c}>" for c in self.columns)
        out = (
            f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS_SOAP}" xmlns:p="{TNS}">'
            f"<SOAP-ENV:Header>{fields}</SOAP-ENV:Header><SOAP-ENV:Body><p:getPersonResponse>{columns}"
            "</p:getPersonResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        )
        return web.Response(body=out.encode(), content_type="text/xml", charset="utf-8")


__all__ = ["SoapPersonsAdapter"]
