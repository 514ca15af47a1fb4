// The user and SAML attributes our test SAML IdP (npm saml-idp) offers on its sign-in form.
// The form lets the test change any value (e.g. uid) before signing in.
module.exports = {
  user: {
    userName: "saml.user@idp.example",
    nameIdFormat: "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    uid: "saml.user",
    displayName: "Saml User",
    email: "saml.user@idp.example",
    userGroup: "staff",
  },
  metadata: [
    { id: "uid", optional: false, displayName: "User ID", description: "uid", multiValue: false },
    { id: "displayName", optional: true, displayName: "Display Name", description: "name", multiValue: false },
    { id: "email", optional: true, displayName: "E-Mail Address", description: "email", multiValue: false },
    { id: "userGroup", optional: true, displayName: "Group", description: "group", multiValue: false },
  ],
};
