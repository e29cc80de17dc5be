-- An agent token is issued to one requester: the address that asked for the node's boot
-- script. A later request for the same node from another address, in the same boot, gets no
-- token and supersedes nothing (docs/security.md).
ALTER TABLE agent_tokens ADD COLUMN peer TEXT;
