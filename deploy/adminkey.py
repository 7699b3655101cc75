"""The gallery's admin key on AWS: made once by provisioning, kept in SSM Parameter Store as a
SecureString (encrypted with the account's AWS managed key `aws/ssm`), read by the web tier at start
(FR_ADMIN_TOKEN_PARAMETER, which provisioning puts in the web host's settings) and by an operator with
`./setup.sh admin-key`. The key is in no file, no log line, no URL and no user data."""

import secrets

from core import settings

# 256 bits, URL-safe text (it travels in an Authorization header).
KEY_BYTES = 32


class AdminKeySteps:
    """Provisioner's steps for the admin key."""

    def ensure_admin_key(self):
        """The key's parameter, made with a new random key unless it exists (a provision never
        changes the key: clients that hold it keep working; teardown removes it)."""
        name = self.config.admin_key_parameter
        try:
            self.ssm.get_parameter(Name=name)
            return "exists"
        except self.ssm.exceptions.ParameterNotFound:
            pass
        self.ssm.put_parameter(
            Name=name,
            Value=secrets.token_urlsafe(KEY_BYTES),
            Type="SecureString",
            Description="the face-recognition service's gallery admin key (Authorization: Bearer)",
            Tags=[{"Key": settings.PREFIX_TAG, "Value": self.config.prefix}],
        )
        return "created"

    def admin_key(self):
        """The key, decrypted (for the operator who asks: ./setup.sh admin-key)."""
        return self.ssm.get_parameter(Name=self.config.admin_key_parameter, WithDecryption=True)["Parameter"]["Value"]

    def _remove_admin_key(self):
        try:
            self.ssm.delete_parameter(Name=self.config.admin_key_parameter)
            self.out(f"{'removed':<12} SSM parameter {self.config.admin_key_parameter}")
        except self.ssm.exceptions.ParameterNotFound:
            pass
