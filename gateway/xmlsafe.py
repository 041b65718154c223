"""XML parsing that a hostile document cannot turn against us (pure).

Every XML document the gateway reads from outside (SOAP messages from information systems, services and peer
servers; WSDL documents) goes through :func:`parse_xml`, a hardened lxml parser:

1. size: at most ``max_bytes`` bytes (the caller's body limit);
2. no DTD at all: a ``<!DOCTYPE`` is refused before parsing (SOAP 1.1 forbids it, section 3), so there are no
   entity declarations, hence no external entities (XXE) and no entity expansion (billion laughs); lxml also
   runs with ``resolve_entities=False``, ``load_dtd=False``, ``no_network=True`` and without ``huge_tree``;
3. nesting: at most ``max_depth`` element levels;
4. attributes: no attribute value longer than ``max_attribute_bytes``, and no text node longer than
   ``max_text_bytes``.

Each refusal is an :class:`~gateway.errors.InvalidXml` (``Client.InvalidXml``) naming the rule broken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import BytesIO

from lxml import etree

from gateway.errors import InvalidXml

_DOCTYPE_RE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_ENTITY_RE = re.compile(rb"<!ENTITY", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class XmlLimits:
    """Bounds on one XML document."""

    max_bytes: int = 10 * 2**20  # bytes; X-Road's default loggable message size
    max_depth: int = 64  # element levels; X-Road messages nest a dozen deep, a WSDL's schemas a few more
    max_attribute_bytes: int = 8 * 1024  # bytes of one attribute value
    max_text_bytes: int = 10 * 2**20  # bytes of one text node (an inline base64 value may be large)


DEFAULT_LIMITS = XmlLimits()


def parse_xml(data: bytes, *, limits: XmlLimits = DEFAULT_LIMITS, what: str = "XML document") -> etree._Element:
    """Parse ``data`` (bytes as received; a UTF-8 BOM is allowed, PR-MESS 2.6) and return its root element.

    Raises:
        InvalidXml: the document is too large, has a DTD or an entity declaration, nests deeper than
            ``max_depth``, has an attribute or text longer than allowed, or is not well-formed XML.
    """
    # (1) size
    if len(data) > limits.max_bytes:
        raise InvalidXml(f"the {what} is {len(data)} bytes long; at most {limits.max_bytes} are allowed")
    # (2) no DTD: refused before the parser sees one, so no entity can be declared, expanded or fetched
    if _DOCTYPE_RE.search(data) is not None or _ENTITY_RE.search(data) is not None:
        raise InvalidXml(f"the {what} has a document type declaration (DTD); DTDs and entities are not allowed")
    depth = 0
    root: etree._Element | None = None
    try:
        for event, element in etree.iterparse(
            BytesIO(data),
            events=("start", "end"),
            resolve_entities=False,
            load_dtd=False,
            no_network=True,
            huge_tree=False,
        ):
            if event == "end":
                depth -= 1
                root = element
                continue
            # (3) nesting
            depth += 1
            if depth > limits.max_depth:
                raise InvalidXml(f"the {what} nests elements more than {limits.max_depth} levels deep")
            # (4) attribute and text sizes
            for name, value in element.attrib.items():
                if len(value) > limits.max_attribute_bytes:
                    raise InvalidXml(
                        f"attribute {etree.QName(name).localname[:60]!r} of the {what} is {len(value)} characters "
                        f"long; at most {limits.max_attribute_bytes} are allowed",
                    )
    except etree.XMLSyntaxError as e:
        raise InvalidXml(f"the {what} is not well-formed XML: {str(e)[:200]}") from e
    if root is None:
        raise InvalidXml(f"the {what} is empty")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:  # belt and braces: (2) should have caught it
        raise InvalidXml(f"the {what} has a document type declaration (DTD); DTDs and entities are not allowed")
    for node in root.iter():
        if isinstance(node, etree._Entity):
            raise InvalidXml(f"the {what} refers to an entity; entities are not allowed")
        if node.text is not None and len(node.text) > limits.max_text_bytes:
            raise InvalidXml(f"a text node of the {what} is longer than {limits.max_text_bytes} characters")
    return root


__all__ = ["DEFAULT_LIMITS", "XmlLimits", "parse_xml"]
