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
// app's GraphQL API. If the laptop is closed, relay answers 503
// `tunnel_offline` at once and keeps the request: `relay replay ID` delivers it
// later.

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

  if (response.data.errors) {
    throw new Error(`addUser failed: ${response.data.errors.map((e) => e.message).join('; ')}`);
  }
  const user = response.data.data.addUser;
  console.log(`addUser ${user.email}: HTTP ${response.status}, id ${user.id}`);
  // Keep the app's id on the Auth0 user, so tokens can carry it.
  api.user.setAppMetadata('app_user_id', user.id);
};
