"""A pass's resulting fragment, handed to the next pass as its tree, written out only when
its text is asked for.

The HTML passes each take the fragment as text and return it as text (htmltree), so each
can be used and tested alone. Writing a tree out costs about as much as the pass itself;
when the next pass takes the tree, the text in between is never needed. A result holds
either its text or its tree: `html` writes the tree (once), `take_tree` hands it on as
parsing its text would give it (htmltree.as_parsed), for a pass that changes it.
"""

from __future__ import annotations

from . import htmltree


class Fragment:
    """An HTML fragment as one pass leaves it: text, or a tree not yet written."""

    def __init__(self, html: str | None = None):
        self._html = html
        self._tree = None

    def keep_tree(self, tree) -> None:
        """Hold `tree` as the result; its text is written when first asked for."""
        self._html, self._tree = None, tree

    @property
    def html(self) -> str:
        if self._html is None:
            if self._tree is None:
                raise RuntimeError("the fragment was handed on as a tree")
            self._html = htmltree.serialize(self._tree)
            self._tree = None
        return self._html

    @html.setter
    def html(self, text: str) -> None:
        self._html, self._tree = text, None

    def take_tree(self):
        """The tree, as parsing the text would give it, for a pass that changes it. Once
        only: after it, `html` is gone (the tree is the next pass's to change)."""
        if self._tree is None:
            return htmltree.parse(self.html)
        tree, self._tree = self._tree, None
        htmltree.forget()
        return htmltree.as_parsed(tree)
