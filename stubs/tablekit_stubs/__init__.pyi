# Stub-only package written by `tablekit stubs`: one module per datastack. DO NOT EDIT.
# Use: if TYPE_CHECKING: from tablekit_stubs import <datastack>
