using System.Xml.Linq;
using Marten;
using Microsoft.AspNetCore.DataProtection.Repositories;

namespace ModularChat.Providers.Secrets;

/// <summary>One data-protection key as stored (its XML is encrypted with the master key outside Development).</summary>
public sealed class DataProtectionKeyDocument
{
    /// <summary>The key's friendly name ("key-{guid}").</summary>
    public string Id { get; set; } = "";

    public string Xml { get; set; } = "";
}

/// <summary>
/// Keeps the data-protection key ring in PostgreSQL (Marten, the default tenant), so every node of a deployment
/// shares it and a new node can read what another encrypted.
/// </summary>
internal sealed class PostgresXmlRepository(IDocumentStore store) : IXmlRepository
{
    // Data Protection's repository contract is synchronous; it is called when the key ring is (re)loaded, rarely.
    public IReadOnlyCollection<XElement> GetAllElements() => Task.Run(async () =>
    {
        await using var session = store.QuerySession();
        var documents = await session.Query<DataProtectionKeyDocument>().ToListAsync();
        return (IReadOnlyCollection<XElement>)documents.Select(d => XElement.Parse(d.Xml)).ToList();
    }).GetAwaiter().GetResult();

    public void StoreElement(XElement element, string friendlyName) => Task.Run(async () =>
    {
        await using var session = store.LightweightSession();
        session.Store(new DataProtectionKeyDocument { Id = friendlyName, Xml = element.ToString(SaveOptions.DisableFormatting) });
        await session.SaveChangesAsync();
    }).GetAwaiter().GetResult();
}
