-- When a workspace credential file carries an expiry the XEM can read (a kubeconfig client
-- certificate's notAfter, a JWT's `exp`, an AWS credentials file's expiration), its latest
-- reload report says so; the posture report judges such a file by its expiry.
ALTER TABLE agent_credentials ADD COLUMN expires_at BIGINT;
