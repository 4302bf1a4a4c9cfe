// The Auth0 post-login Action, as pasted into the Auth0 dashboard
// (Actions > Library > Build Custom, trigger "Login / Post Login", with the
// `axios` dependency and two secrets):
//
//   RELAY_URL      your stable relay URL, e.g. https://alice.relay.example.com
//                  (it stays the same on every `relay connect`, unlike an
//                  ngrok free URL: no more editing the Action each session)
//   ACTION_SECRET  the bearer secret the app checks
//
// On a user's first login it adds the user to the app's database through the
// app's GraphQL API. Run the tunnel with
// `relay connect 4000 --when-offline accept --deliver-missed`: if the laptop
// is closed, relay answers 202 `{"queued": true, "request_id": ...}` at once,
// so the login goes on, and it keeps the request; the next `relay connect`
// delivers it to the app by itself. (With the default `--when-offline
// reject` relay answers 503 `tunnel_offline`, axios throws, and the login
// fails.)

const axios = require('axios');

const ADD_USER = `
  mutation AddUser($email: String!) {
    addUser(email: $email) {
      id
      email
    }
  }
`;

exports.onExecutePostLogin = async (event, api) => {
  if (event.stats.logins_count !== 1) {
    return; // not the first login: the user is in the database already
  }

  // The email goes in as a GraphQL variable, not pasted into the query text.
  const response = await axios.post(
    `${event.secrets.RELAY_URL}/graphql`,
    { query: ADD_USER, variables: { email: event.user.email } },
    {
      headers: { Authorization: `Bearer ${event.secrets.ACTION_SECRET}` },
      timeout: 10000, // Actions have a 20 s budget in all
    },
  );

  if (response.status === 202 && response.data && response.data.queued === true) {
    // relay kept the call: the app gets it when the laptop is back. The
    // app's id is not known yet, so app_user_id is left unset.
    console.log(
      `addUser ${event.user.email}: HTTP 202, queued by relay as ${response.data.request_id}; ` +
        'the app gets it when it is back',
    );
    return;
  }
  if (response.data.errors) {
    throw new Error(`addUser failed: ${response.data.errors.map((e) => e.message).join('; ')}`);
  }
  const user = response.data.data.addUser;
  console.log(`addUser ${user.email}: HTTP ${response.status}, id ${user.id}`);
  // Keep the app's id on the Auth0 user, so tokens can carry it.
  api.user.setAppMetadata('app_user_id', user.id);
};
