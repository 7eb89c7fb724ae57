"""One module per steering library: its ``ADAPTER`` (:class:`equiv_core.conformance.adapter.Adapter`). Each imports
its library at the top: import a module only in that library's environment (``nox -s conformance_cell``)."""
