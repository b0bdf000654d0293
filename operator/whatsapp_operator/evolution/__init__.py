"""Evolution API: the REST client and the Socket.IO event model."""
