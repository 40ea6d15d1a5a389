"""Text that users gave us (paths, error messages, install hints), made safe to print.

Two things break printing such text: rich reads ``[...]`` as markup and drops it (a hint
``pip install "captionkit[grounded]"`` loses ``[grounded]``, a file ``bad [bold].jpg`` prints
as ``bad .jpg``), and a file name that is not UTF-8 arrives as lone surrogates, which a
strict UTF-8 stream refuses to encode.
"""

from __future__ import annotations


def plain(text: object) -> str:
    """``text`` with undecodable bytes of a file name shown as ``\\xNN`` escapes.

    ``os.fsdecode`` keeps such bytes as lone surrogates (``\\udcff``); encoding them back
    gives the original bytes, and decoding those with ``backslashreplace`` gives a printable
    string that still tells the user which byte it was.
    """
    s = str(text)
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def markup(text: object) -> str:
    """``text`` for a rich string that also holds markup: printable and shown literally."""
    from rich.markup import escape

    return escape(plain(text))
