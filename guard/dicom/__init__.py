"""The DICOM adapter: every outbound DICOM conversation.

Association set-up, TLS pins, C-ECHO, C-FIND, C-STORE, N-ACTION, N-EVENT-REPORT and C-MOVE.
"""
